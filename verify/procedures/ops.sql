-- Verify commercecore:procedures/ops on pg
begin;

select day, currency, orders_paid, revenue_minor, refunded_minor, units from ops.sales_daily where false;
select queryid, query, calls, total_exec_ms, mean_exec_ms, rows, shared_blks_hit_ratio from ops.top_queries where false;
select schema_name, table_name, index_name, idx_scan, index_size_bytes, unused from ops.index_usage where false;
select database_hit_ratio, table_hit_ratio, index_hit_ratio from ops.cache_hit_ratio;

select 1 / has_function_privilege('app_dba', 'ops.expire_unpaid_orders(interval, interval)', 'execute')::int;
select 1 / has_function_privilege('app_dba', 'ops.refresh_sales_daily()', 'execute')::int;
select 1 / has_function_privilege('app_dba', 'ops.table_bloat(regclass)', 'execute')::int;
select 1 / has_function_privilege('app_dba', 'ops.table_bloat(text)', 'execute')::int;
select 1 / (not has_function_privilege('app_admin', 'ops.expire_unpaid_orders(interval, interval)', 'execute'))::int;
select 1 / has_table_privilege('app_admin', 'ops.sales_daily', 'select')::int;
select 1 / (not has_table_privilege('app_admin', 'ops.top_queries', 'select'))::int;
select 1 / has_table_privilege('app_dba', 'ops.top_queries', 'select')::int;
select 1 / has_function_privilege('app_dba', 'ops.pg_stat_statements(boolean)', 'execute')::int;

-- behaviour: the report refreshes concurrently, the expiry job runs, the bloat of a table is measured
select ops.refresh_sales_daily();
select 1 / (ops.expire_unpaid_orders('100 years', '100 years') = 0)::int;
select 1 / (count(*) = 1)::int from ops.table_bloat('core.orders');
select 1 / (count(*) = 1)::int from ops.table_bloat('core.orders'::regclass);

rollback;
