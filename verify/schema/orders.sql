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

rollback;
