-- Verify commercecore:procedures/orders/limits on pg
begin;

-- the shop's settings follow their GUCs (the database may set its own defaults, so none is assumed here)
select
  set_config('commercecore.order_max_unpaid_age', '90 minutes', true) as max_age,
  set_config('commercecore.max_open_orders', '1', true) as open_orders,
  set_config('commercecore.max_units_per_product', '11', true) as units;
select 1 / (core.order_max_unpaid_age() = interval '90 minutes')::int;
select 1 / (core.max_open_orders() = 1)::int;
select 1 / (core.max_units_per_product() = 11)::int;

-- a customer at the open-orders limit may not open another; units are counted across unpaid orders
insert into core.users (email) values ('verify-limits@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-LIMITS', 'limits', 100);
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-limits@example.com';
insert into core.inventory_movements (product_id, delta, reason)
select id as product_id, 20 as delta, 'restock' as reason from core.products where sku = 'VERIFY-LIMITS';
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 10 as quantity, 100 as unit_price_minor
from core.orders as o, core.products as p
where o.user_id = (select id from core.users where email = 'verify-limits@example.com') and p.sku = 'VERIFY-LIMITS';
do $$
declare
  customer bigint := (select id from core.users where email = 'verify-limits@example.com');
  product bigint := (select id from core.products where sku = 'VERIFY-LIMITS');
  got text;
begin
  perform core.check_order_limits(customer, array[product], array[1]);
  begin
    perform core.check_order_limits(customer, array[product], array[2]);
    raise exception 'a customer got more units than the shop''s limit';
  exception when sqlstate 'PT409' then
    get stacked diagnostics got = pg_exception_detail;
    if got::jsonb ->> 'code' <> 'per_customer_limit' then
      raise exception 'the limit raised %', got;
    end if;
  end;
  begin
    perform core.check_order_limits(customer, array[product], array[1], new_order => true);
    raise exception 'a customer opened more orders than the shop''s limit';
  exception when sqlstate 'PT409' then
    get stacked diagnostics got = pg_exception_detail;
    if got::jsonb ->> 'code' <> 'too_many_open_orders' then
      raise exception 'the limit raised %', got;
    end if;
  end;
end;
$$;

select 1 / (not has_function_privilege('app_readwrite', 'core.check_order_limits(bigint, bigint[], integer[], boolean)', 'execute'))::int;

rollback;
