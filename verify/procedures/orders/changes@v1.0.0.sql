-- Verify commercecore:procedures/orders/changes on pg
begin;

insert into core.users (email) values ('verify-changes@example.com');
insert into core.products (sku, name, price_minor, max_per_customer)
values ('VERIFY-CHG-1', 'one', 300, 5), ('VERIFY-CHG-2', 'two', 500, null);
insert into core.inventory_movements (product_id, delta, reason)
select p.id as product_id, 10 as delta, 'restock' as reason from core.products as p where p.sku like 'VERIFY-CHG-%';
select set_config('verify.p1', id::text, true) from core.products where sku = 'VERIFY-CHG-1';
select set_config('verify.p2', id::text, true) from core.products where sku = 'VERIFY-CHG-2';

-- a pending order of one line, as create_order leaves it: the line and its ledger row
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-changes@example.com';
select set_config('verify.order', id::text, true) from core.orders
where user_id = (select id from core.users where email = 'verify-changes@example.com');
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 2 as quantity, p.price_minor as unit_price_minor
from core.orders as o, core.products as p
where o.id = current_setting('verify.order')::bigint and p.sku = 'VERIFY-CHG-1';
insert into core.inventory_movements (product_id, delta, reason, order_id)
values (current_setting('verify.p1')::bigint, -2, 'order', current_setting('verify.order')::bigint);

select set_config('request.jwt.claims', jsonb_build_object('sub', id::text, 'role', 'app_readwrite')::text, true)
from core.users where email = 'verify-changes@example.com';
select set_config('role', 'app_readwrite', true);

-- modify and delete move stock back and forth; cancel restores it
select 1 / ((api.modify_order(
  current_setting('verify.order')::bigint, current_setting('verify.p1')::bigint, 5
) ->> 'total_minor') = '1500')::int;
select 1 / ((api.modify_order(
  current_setting('verify.order')::bigint, current_setting('verify.p2')::bigint, 1
) ->> 'total_minor') = '2000')::int;
-- the product's max_per_customer (5) holds across the customer's unpaid orders
do $$
begin
  perform api.modify_order(current_setting('verify.order')::bigint, current_setting('verify.p1')::bigint, 6);
  raise exception 'a customer got more units than the product''s max_per_customer';
exception when sqlstate 'PT409' then
  null;
end;
$$;
select 1 / ((api.delete_product_in_order(
  current_setting('verify.order')::bigint, current_setting('verify.p2')::bigint
) ->> 'total_minor') = '1500')::int;
select 1 / ((api.cancel_order(current_setting('verify.order')::bigint) ->> 'status') = 'cancelled')::int;
reset role;

select 1 / (count(*) = 2)::int
from core.products as p
where
  p.sku like 'VERIFY-CHG-%'
  and p.stock = 10
  and p.stock = (select sum(m.delta) from core.inventory_movements as m where m.product_id = p.id);

select 1 / has_function_privilege('app_readwrite', 'api.modify_order(bigint, bigint, integer)', 'execute')::int;
select 1 / has_function_privilege('app_readwrite', 'api.delete_product_in_order(bigint, bigint)', 'execute')::int;
select 1 / has_function_privilege('app_readwrite', 'api.cancel_order(bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'api.cancel_order(bigint)', 'execute'))::int;

rollback;
