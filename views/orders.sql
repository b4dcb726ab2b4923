-- Deploy commercecore:views/orders to pg
-- requires: procedures/orders/reads
-- The caller's orders and order lines (staff: everyone's), read through the functions of
-- procedures/orders/reads.
begin;

set local role app_owner;

create view api.orders with (security_barrier) as
select
  r.id,
  r.user_id,
  r.status,
  r.currency,
  r.total_minor,
  r.refunded_minor,
  api.get_order(r.id) -> 'items' as items,
  r.shipping_address,
  r.cancel_reason,
  r.created_at,
  r.updated_at,
  r.paid_at,
  r.cancelled_at
from api.order_rows() as r;

comment on view api.orders is
'The caller''s orders (staff: all orders), newest first unless an order is asked for. items is
[{product_id, sku, name, quantity, unit_price_minor, line_total_minor}] by product id. items is built per
order: leave it out of select= to list many orders cheaply (staff), and read lines from api.order_items.
@route GET /orders
@order id, status, total_minor, created_at, updated_at, paid_at';
comment on column api.orders.status is 'pending, paid, cancelled or refunded.';
comment on column api.orders.total_minor is 'Sum of the items'' unit_price_minor x quantity, in minor units.';
comment on column api.orders.refunded_minor is 'Amount refunded so far, in minor units.';
comment on column api.orders.shipping_address is 'The shipping address as it was when the order was placed.';
comment on column api.orders.cancel_reason is 'customer, staff or expired, for cancelled orders.';

grant select on api.orders to app_readwrite, app_admin;

create view api.order_items with (security_barrier) as
select
  r.order_id,
  r.product_id,
  r.sku,
  r.name,
  r.quantity,
  r.unit_price_minor,
  r.line_total_minor,
  r.created_at,
  r.updated_at
from api.order_item_rows() as r;

comment on view api.order_items is
'The lines of the caller''s orders (staff: all orders), with the unit price of when the line was added;
sku and name are the product''s current ones.
@order order_id, product_id, created_at';
comment on column api.order_items.unit_price_minor is 'The product''s price when the line was added, in minor units.';

grant select on api.order_items to app_readwrite, app_admin;

commit;
