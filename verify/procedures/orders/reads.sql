-- Verify commercecore:procedures/orders/reads on pg
begin;

-- a customer reads their own order and its lines, and nobody else's
insert into core.users (email) values ('verify-reads-a@example.com'), ('verify-reads-b@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-READS', 'reads', 250);
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-reads-a@example.com';
select set_config('verify.order', id::text, true) from core.orders
where user_id = (select id from core.users where email = 'verify-reads-a@example.com');
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 2 as quantity, p.price_minor as unit_price_minor
from core.orders as o, core.products as p
where o.id = current_setting('verify.order')::bigint and p.sku = 'VERIFY-READS';

select set_config('request.jwt.claims', jsonb_build_object('sub', id::text, 'role', 'app_readwrite')::text, true)
from core.users where email = 'verify-reads-a@example.com';
select set_config('verify.b', jsonb_build_object('sub', id::text, 'role', 'app_readwrite')::text, true)
from core.users where email = 'verify-reads-b@example.com';
select set_config('role', 'app_readwrite', true);
select 1 / ((api.get_order(current_setting('verify.order')::bigint) ->> 'total_minor') = '500')::int;
select 1 / (count(*) = 1)::int from api.order_rows() where id = current_setting('verify.order')::bigint;
select 1 / (count(*) = 1)::int from api.order_item_rows() where order_id = current_setting('verify.order')::bigint;
select set_config('request.jwt.claims', current_setting('verify.b'), true);
select 1 / (count(*) = 0)::int from api.order_rows() where id = current_setting('verify.order')::bigint;
select 1 / (count(*) = 0)::int from api.order_item_rows() where order_id = current_setting('verify.order')::bigint;
do $$
begin
  perform api.get_order(current_setting('verify.order')::bigint);
  raise exception 'a customer read another customer''s order';
exception when sqlstate 'PT404' then
  null;
end;
$$;
reset role;

select 1 / has_function_privilege('app_readwrite', 'api.get_order(bigint)', 'execute')::int;
select 1 / has_function_privilege('app_admin', 'api.order_rows()', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'api.order_item_rows()', 'execute'))::int;

rollback;
