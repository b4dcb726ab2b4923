-- Verify commercecore:procedures/orders/placing on pg
begin;

insert into core.users (email) values ('verify-placing@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-PLACE-1', 'one', 300), ('VERIFY-PLACE-2', 'two', 500);
insert into core.inventory_movements (product_id, delta, reason)
select p.id as product_id, 10 as delta, 'restock' as reason from core.products as p where p.sku like 'VERIFY-PLACE-%';
select set_config('verify.user', id::text, true) from core.users where email = 'verify-placing@example.com';
select set_config('verify.products', array_agg(id order by id)::text, true) from core.products where sku like 'VERIFY-PLACE-%';

-- the steps in create_order's order: one currency, the order row, the locked products, lines, stock
select 1 / (core.order_currency(current_setting('verify.products')::bigint[]) = 'EUR')::int;
select 1 / ((core.order_shipping_address(current_setting('verify.user')::bigint, null)).id is null)::int;
select set_config(
  'verify.order', core.insert_order(current_setting('verify.user')::bigint, 'EUR', null)::text, true
);
select core.lock_order_products(current_setting('verify.products')::bigint[], '{2,1}', 'EUR');
select core.insert_order_lines(
  current_setting('verify.order')::bigint, current_setting('verify.user')::bigint,
  current_setting('verify.products')::bigint[], '{2,1}'
);
select core.take_stock(
  current_setting('verify.order')::bigint, current_setting('verify.user')::bigint,
  current_setting('verify.products')::bigint[], '{2,1}'
);
select 1 / (total_minor = 1100)::int from core.orders where id = current_setting('verify.order')::bigint;
select 1 / (sum(stock) = 17)::int from core.products where sku like 'VERIFY-PLACE-%';

-- more than the stock is refused under the lock
do $$
begin
  perform core.lock_order_products(current_setting('verify.products')::bigint[], '{9,1}', 'EUR');
  raise exception 'an order took more than the stock';
exception when sqlstate 'PT409' then
  null;
end;
$$;

rollback;
