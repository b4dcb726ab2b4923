-- Verify commercecore:schema/housekeeping on pg
begin;

select table_name, purged_rows, last_purged_at from ops.purged_rows where false;
select 1 / (count(*) = 3)::int from ops.purged_rows;
select 1 / (pg_catalog.pg_get_userbyid(relowner) = 'app_owner')::int
from pg_catalog.pg_class where oid = 'ops.purged_rows'::regclass;

rollback;
