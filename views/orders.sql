-- Deploy commercecore:views/orders to pg
-- requires: procedures/orders
-- requires: schema/errors
-- The caller's orders and order lines (staff: everyone's), and one order by id.
-- The views read through security definer functions: the row-level security policies of core.orders and
-- core.order_items call core.current_user_id(), core.is_admin() and core.is_service(), and a policy's
-- functions run with the privileges of the querying role (not the view owner's), which has no access to
-- schema core. The functions apply the same rule as the policies, on the indexes: a customer's rows come
-- from orders_user_id_created_at_idx, not from a scan of every order.
begin;

set local role app_owner;

create function api.get_order(order_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  document jsonb := core.order_document(get_order.order_id);
begin
  -- row-level security: another customer's order is as missing as one that does not exist
  if document is null then
    perform core.raise_not_found('order', get_order.order_id, 'List your orders with GET /orders.');
  end if;
  return document;
end;
$$;

comment on function api.get_order(bigint) is
'One of the caller''s orders (staff: any order): {id, user_id, status, currency, total_minor, refunded_minor,
items: [{product_id, sku, name, quantity, unit_price_minor, line_total_minor}], shipping_address,
cancel_reason, created_at, updated_at, paid_at, cancelled_at}.
Errors: 404 not_found (missing or not yours, the same).
@route GET /orders/{order_id}';

grant execute on function api.get_order(bigint) to app_readwrite, app_admin;

create function api.order_rows()
returns table (
  id bigint,
  user_id bigint,
  status text,
  currency text,
  total_minor bigint,
  refunded_minor bigint,
  shipping_address jsonb,
  cancel_reason text,
  created_at timestamptz,
  updated_at timestamptz,
  paid_at timestamptz,
  cancelled_at timestamptz
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if core.is_admin() then
    return query
    select o.id, o.user_id, o.status, o.currency, o.total_minor, o.refunded_minor, o.shipping_address,
      o.cancel_reason, o.created_at, o.updated_at, o.paid_at, o.cancelled_at
    from core.orders as o
    order by o.created_at desc, o.id desc;
  else
    return query
    select o.id, o.user_id, o.status, o.currency, o.total_minor, o.refunded_minor, o.shipping_address,
      o.cancel_reason, o.created_at, o.updated_at, o.paid_at, o.cancelled_at
    from core.orders as o
    where o.user_id = core.current_user_id()
    order by o.created_at desc, o.id desc;
  end if;
end;
$$;

comment on function api.order_rows() is
'The rows behind the view api.orders: the caller''s orders (staff: all), newest first, without items.
It exists because a view cannot read core.orders as a request role (see api.orders).';

grant execute on function api.order_rows() to app_readwrite, app_admin;

create function api.order_item_rows()
returns table (
  order_id bigint,
  product_id bigint,
  sku text,
  name text,
  quantity integer,
  unit_price_minor bigint,
  line_total_minor bigint,
  created_at timestamptz,
  updated_at timestamptz
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if core.is_admin() then
    return query
    select i.order_id, i.product_id, p.sku, p.name, i.quantity, i.unit_price_minor,
      i.quantity::bigint * i.unit_price_minor, i.created_at, i.updated_at
    from core.order_items as i
    join core.products as p on i.product_id = p.id
    order by i.order_id desc, i.product_id;
  else
    return query
    select i.order_id, i.product_id, p.sku, p.name, i.quantity, i.unit_price_minor,
      i.quantity::bigint * i.unit_price_minor, i.created_at, i.updated_at
    from core.orders as o
    join core.order_items as i on o.id = i.order_id
    join core.products as p on i.product_id = p.id
    where o.user_id = core.current_user_id()
    order by i.order_id desc, i.product_id;
  end if;
end;
$$;

comment on function api.order_item_rows() is
'The rows behind the view api.order_items: the lines of the caller''s orders (staff: all).';

grant execute on function api.order_item_rows() to app_readwrite, app_admin;

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
