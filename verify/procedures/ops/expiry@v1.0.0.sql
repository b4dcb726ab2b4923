-- Verify commercecore:procedures/ops/expiry on pg
begin;

select 1 / has_function_privilege('app_dba', 'ops.expire_unpaid_orders(interval, interval)', 'execute')::int;
select 1 / (not has_function_privilege('app_admin', 'ops.expire_unpaid_orders(interval, interval)', 'execute'))::int;

-- behaviour: an unpaid order past its maximum age is cancelled and its stock put back
insert into core.users (email) values ('verify-expiry@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-EXPIRY', 'expiry', 100);
insert into core.inventory_movements (product_id, delta, reason)
select id as product_id, 3 as delta, 'restock' as reason from core.products where sku = 'VERIFY-EXPIRY';
insert into core.orders (user_id, currency, created_at)
select id as user_id, 'EUR' as currency, now() - interval '2 hours' as created_at from core.users where email = 'verify-expiry@example.com';
select set_config('verify.order', id::text, true) from core.orders
where user_id = (select id from core.users where email = 'verify-expiry@example.com');
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 2 as quantity, p.price_minor as unit_price_minor
from core.orders as o, core.products as p
where o.id = current_setting('verify.order')::bigint and p.sku = 'VERIFY-EXPIRY';
insert into core.inventory_movements (product_id, delta, reason, order_id)
select id as product_id, -2 as delta, 'order' as reason, current_setting('verify.order')::bigint as order_id
from core.products where sku = 'VERIFY-EXPIRY';
select 1 / (ops.expire_unpaid_orders('100 years', '1 hour') >= 1)::int;
select 1 / (status = 'cancelled' and cancel_reason = 'expired')::int from core.orders
where id = current_setting('verify.order')::bigint;
select 1 / (stock = 3)::int from core.products where sku = 'VERIFY-EXPIRY';

rollback;
