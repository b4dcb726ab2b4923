-- Verify commercecore:procedures/orders/common on pg
begin;

insert into core.users (email) values ('verify-common@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-COMMON', 'common', 250);
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-common@example.com';
select set_config('verify.order', id::text, true) from core.orders
where user_id = (select id from core.users where email = 'verify-common@example.com');
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 2 as quantity, p.price_minor as unit_price_minor
from core.orders as o, core.products as p
where o.id = current_setting('verify.order')::bigint and p.sku = 'VERIFY-COMMON';

-- the order shape, with its lines and the total the trigger keeps
select
  1 / (
    core.order_json(current_setting('verify.order')::bigint) @> '{"status": "pending", "total_minor": 500}'
    and core.order_json(current_setting('verify.order')::bigint) -> 'items' -> 0 ->> 'line_total_minor' = '500'
  )::int;
select 1 / ((core.lock_pending_order(current_setting('verify.order')::bigint)).status = 'pending')::int;
do $$
begin
  perform core.raise_insufficient_stock(1, 2, 1);
  raise exception 'raise_insufficient_stock returned';
exception when sqlstate 'PT409' then
  null;
end;
$$;

select 1 / (not has_function_privilege('app_readwrite', 'core.order_json(bigint)', 'execute'))::int;

rollback;
