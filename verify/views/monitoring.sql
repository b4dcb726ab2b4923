-- Verify commercecore:views/monitoring on pg
begin;

select queryid, query, calls, total_exec_ms, mean_exec_ms, rows, shared_blks_hit_ratio from ops.top_queries where false;
select schema_name, table_name, index_name, idx_scan, index_size_bytes, unused from ops.index_usage where false;
select database_hit_ratio, table_hit_ratio, index_hit_ratio from ops.cache_hit_ratio;

select 1 / (not has_table_privilege('app_admin', 'ops.top_queries', 'select'))::int;
select 1 / has_table_privilege('app_dba', 'ops.top_queries', 'select')::int;
select 1 / has_table_privilege('app_dba', 'ops.index_usage', 'select')::int;
select 1 / has_table_privilege('app_dba', 'ops.cache_hit_ratio', 'select')::int;
select 1 / has_function_privilege('app_dba', 'ops.pg_stat_statements(boolean)', 'execute')::int;

rollback;
