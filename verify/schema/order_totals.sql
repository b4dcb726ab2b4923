-- Verify commercecore:schema/order_totals on pg
begin;

-- an order written with the total of its lines keeps it; lines written afterwards move it
insert into core.users (email) values ('verify-totals@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-TOTAL', 'total', 250);
insert into core.orders (user_id, currency, total_minor)
select u.id as user_id, 'EUR' as currency, 500 as total_minor from core.users as u where u.email = 'verify-totals@example.com';
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 2 as quantity, 250 as unit_price_minor
from core.orders as o
cross join core.products as p
where p.sku = 'VERIFY-TOTAL' and o.user_id = (select u.id from core.users as u where u.email = 'verify-totals@example.com');
select 1 / (o.total_minor = 500)::int from core.orders as o
where o.user_id = (select u.id from core.users as u where u.email = 'verify-totals@example.com');
update core.order_items set quantity = 3
where product_id = (select p.id from core.products as p where p.sku = 'VERIFY-TOTAL');
select 1 / (o.total_minor = 750)::int from core.orders as o
where o.user_id = (select u.id from core.users as u where u.email = 'verify-totals@example.com');

rollback;
