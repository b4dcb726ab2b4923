-- Verify commercecore:procedures/orders/create on pg
begin;

insert into core.users (email) values ('verify-orders@example.com');
insert into core.products (sku, name, price_minor, max_per_customer)
values ('VERIFY-ORD-1', 'one', 300, 5), ('VERIFY-ORD-2', 'two', 500, null);
insert into core.inventory_movements (product_id, delta, reason)
select p.id as product_id, 10 as delta, 'restock' as reason from core.products as p where p.sku like 'VERIFY-ORD-%';

select set_config('request.jwt.claims', jsonb_build_object('sub', id::text, 'role', 'app_readwrite')::text, true)
from core.users where email = 'verify-orders@example.com';
select set_config('verify.p1', id::text, true) from core.products where sku = 'VERIFY-ORD-1';
select set_config('verify.p2', id::text, true) from core.products where sku = 'VERIFY-ORD-2';
select set_config('role', 'app_readwrite', true);

-- prices from the catalog, stock taken; the same key and body replay the first response
select set_config('verify.created', api.create_order(jsonb_build_array(
  jsonb_build_object('product_id', current_setting('verify.p1')::bigint, 'quantity', 2),
  jsonb_build_object('product_id', current_setting('verify.p2')::bigint, 'quantity', 1)
), idempotency_key => 'verify-key')::text, true);
select set_config('verify.order', current_setting('verify.created')::jsonb ->> 'id', true);
select 1 / (current_setting('response.status') = '201')::int;
select 1 / ((current_setting('verify.created')::jsonb ->> 'total_minor') = '1100')::int;
select 1 / ((api.create_order(jsonb_build_array(
  jsonb_build_object('product_id', current_setting('verify.p1')::bigint, 'quantity', 2),
  jsonb_build_object('product_id', current_setting('verify.p2')::bigint, 'quantity', 1)
), idempotency_key => 'verify-key') ->> 'id') = current_setting('verify.order'))::int;
select 1 / (current_setting('response.headers')::jsonb @> '[{"Idempotent-Replayed": "true"}]')::int;
-- the product's max_per_customer (5) holds across the customer's unpaid orders
do $$
begin
  perform api.create_order(
    jsonb_build_array(jsonb_build_object('product_id', current_setting('verify.p1')::bigint, 'quantity', 4))
  );
  raise exception 'a customer got more units than the product''s max_per_customer';
exception when sqlstate 'PT409' then
  null;
end;
$$;
reset role;

select 1 / (count(*) = 2)::int
from core.products as p
where
  p.sku like 'VERIFY-ORD-%'
  and p.stock = (select sum(m.delta) from core.inventory_movements as m where m.product_id = p.id)
  and p.stock < 10;

select 1 / has_function_privilege('app_readwrite', 'api.create_order(jsonb, bigint, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'api.create_order(jsonb, bigint, text)', 'execute'))::int;

rollback;
