-- Verify commercecore:procedures/ops/reports on pg
begin;

select 1 / has_function_privilege('app_dba', 'ops.refresh_sales_daily()', 'execute')::int;
select 1 / (not has_function_privilege('app_admin', 'ops.refresh_sales_daily()', 'execute'))::int;

-- behaviour: the report refreshes concurrently
select ops.refresh_sales_daily();

rollback;
