-- Verify commercecore:procedures/ops/housekeeping on pg
begin;

select 1 / has_function_privilege('app_dba', 'ops.purge_batch(text, integer)', 'execute')::int;
select 1 / (not has_function_privilege('app_admin', 'ops.purge_batch(text, integer)', 'execute'))::int;
select 1 / has_function_privilege('authenticator', 'auth.purge_totals()', 'execute')::int;

-- behaviour: a batch runs on each table and is counted
select 1 / (ops.purge_batch('auth.sessions', 10) >= 0)::int;
select 1 / (ops.purge_batch('auth.login_failures', 10) >= 0)::int;
select 1 / (ops.purge_batch('core.idempotency_keys', 10) >= 0)::int;
select 1 / (count(*) = 3)::int from auth.purge_totals();
select 1 / (count(*) = 3)::int from ops.purged_rows where last_purged_at is not null;

rollback;
