-- Verify commercecore:views/sales_daily on pg
begin;

select day, currency, orders_paid, revenue_minor, refunded_minor, units from ops.sales_daily where false;

select 1 / has_table_privilege('app_admin', 'ops.sales_daily', 'select')::int;
select 1 / has_table_privilege('app_dba', 'ops.sales_daily', 'select')::int;
select 1 / (not has_table_privilege('app_readwrite', 'ops.sales_daily', 'select'))::int;

rollback;
