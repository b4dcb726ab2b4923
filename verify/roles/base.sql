-- Verify commercecore:roles/base on pg
begin;

-- every role exists, and only authenticator can log in
select 1 / (count(*) = 7)::int
from pg_catalog.pg_roles
where
  rolname in (
    'app_owner', 'app_readonly', 'app_readwrite', 'app_admin', 'app_payments', 'app_dba', 'authenticator'
  )
  and rolcanlogin = (rolname = 'authenticator')
  and not rolsuper
  and not rolbypassrls;

-- the gateway can switch to the request roles, not to the owner or the DBA role, and inherits nothing
select 1 / (
  pg_catalog.pg_has_role('authenticator', 'app_readwrite', 'set')
  and pg_catalog.pg_has_role('authenticator', 'app_payments', 'set')
  and not pg_catalog.pg_has_role('authenticator', 'app_owner', 'member')
  and not pg_catalog.pg_has_role('authenticator', 'app_dba', 'member')
  and not pg_catalog.pg_has_role('authenticator', 'app_readwrite', 'usage')
)::int;

-- every request role has a statement timeout
select 1 / (count(*) = 6)::int
from pg_catalog.pg_db_role_setting as s
inner join pg_catalog.pg_roles as r on s.setrole = r.oid
where
  s.setdatabase = 0
  and r.rolname in ('authenticator', 'app_readonly', 'app_readwrite', 'app_admin', 'app_payments', 'app_dba')
  and exists (
    select from unnest(s.setconfig) as c (setting)
    where c.setting like 'statement_timeout=%'
  );

-- PUBLIC cannot connect to this database
select 1 / (not has_database_privilege('public', current_database(), 'connect'))::int;

rollback;
