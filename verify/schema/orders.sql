-- Verify commercecore:schema/orders on pg
begin;

select id, user_id, status, currency, total_minor, refunded_minor, created_at from core.orders where false;
select order_id, product_id, user_id, quantity, unit_price_minor from core.order_items where false;

select 1 / (count(*) = 2)::int
from pg_catalog.pg_class
where
  oid in ('core.orders'::regclass, 'core.order_items'::regclass)
  and relrowsecurity
  and relforcerowsecurity;

-- the shop's settings follow their GUCs (the database may set its own defaults, so none is assumed here)
select
  set_config('commercecore.order_max_unpaid_age', '90 minutes', true) as max_age,
  set_config('commercecore.max_open_orders', '7', true) as open_orders,
  set_config('commercecore.max_units_per_product', '11', true) as units;
select 1 / (core.order_max_unpaid_age() = interval '90 minutes')::int;
select 1 / (core.max_open_orders() = 7)::int;
select 1 / (core.max_units_per_product() = 11)::int;

rollback;
