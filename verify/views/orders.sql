-- Verify commercecore:views/orders on pg
begin;

select id, user_id, status, currency, total_minor, refunded_minor, items, created_at, updated_at, paid_at, cancelled_at
from api.orders where false;
select order_id, product_id, quantity, unit_price_minor from api.order_items where false;

-- a customer sees their own order and its lines, and nobody else's
insert into core.users (email) values ('verify-a@example.com'), ('verify-b@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-VIEW', 'view', 250);
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-a@example.com';
select set_config('verify.order', id::text, true) from core.orders
where user_id = (select id from core.users where email = 'verify-a@example.com');
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 2 as quantity, p.price_minor as unit_price_minor
from core.orders as o, core.products as p
where o.id = current_setting('verify.order')::bigint and p.sku = 'VERIFY-VIEW';
select set_config('request.jwt.claims', jsonb_build_object('sub', id::text, 'role', 'app_readwrite')::text, true)
from core.users where email = 'verify-a@example.com';
select set_config('verify.b', jsonb_build_object('sub', id::text, 'role', 'app_readwrite')::text, true)
from core.users where email = 'verify-b@example.com';
select set_config('role', 'app_readwrite', true);
select 1 / (count(*) = 1 and min(total_minor) = 500 and min(items -> 0 ->> 'quantity') = '2')::int
from api.orders where id = current_setting('verify.order')::bigint;
select 1 / (count(*) = 1)::int from api.order_items where order_id = current_setting('verify.order')::bigint;
select set_config('request.jwt.claims', current_setting('verify.b'), true);
select 1 / (count(*) = 0)::int from api.orders where id = current_setting('verify.order')::bigint;
select 1 / (count(*) = 0)::int from api.order_items where order_id = current_setting('verify.order')::bigint;
reset role;

select 1 / has_table_privilege('app_readwrite', 'api.orders', 'select')::int;
select 1 / has_table_privilege('app_admin', 'api.order_items', 'select')::int;
select 1 / (not has_table_privilege('app_readonly', 'api.orders', 'select'))::int;

rollback;
