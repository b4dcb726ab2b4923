-- Verify commercecore:schema/login_failures on pg
begin;

select email_hash, client, failed_attempts, last_failed_at, retry_at from auth.login_failures where false;
select 1 / (pg_catalog.pg_get_userbyid(relowner) = 'app_owner')::int
from pg_catalog.pg_class where oid = 'auth.login_failures'::regclass;
select 1 / (not has_table_privilege('authenticator', 'auth.login_failures', 'select'))::int;

rollback;
