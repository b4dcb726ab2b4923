-- Verify commercecore:procedures/ops/bloat on pg
begin;

select 1 / has_function_privilege('app_dba', 'ops.table_bloat(regclass)', 'execute')::int;
select 1 / has_function_privilege('app_dba', 'ops.table_bloat(text)', 'execute')::int;
select 1 / (not has_function_privilege('app_admin', 'ops.table_bloat(text)', 'execute'))::int;

-- behaviour: the bloat of a table is measured, by name or by regclass
select 1 / (count(*) = 1)::int from ops.table_bloat('core.orders');
select 1 / (count(*) = 1)::int from ops.table_bloat('core.orders'::regclass);

rollback;
