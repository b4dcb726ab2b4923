-- Verify commercecore:schema/users on pg
begin;

select id, email, full_name, role, created_at, updated_at from core.users where false;
select id, user_id, kind, is_default, country from core.addresses where false;

select 1 / (count(*) = 2)::int
from pg_catalog.pg_class
where
  oid in ('core.users'::regclass, 'core.addresses'::regclass)
  and relrowsecurity
  and relforcerowsecurity;

rollback;
