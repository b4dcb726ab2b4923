-- Deploy commercecore:procedures/orders/reads to pg
-- requires: procedures/orders/common
-- The caller's orders and order lines (staff: everyone's), and one order by id. The views of views/orders
-- read through the security definer functions here: the row-level security policies of core.orders and
-- core.order_items call core.current_user_id(), core.is_admin() and core.is_service(), and a policy's
-- functions run with the privileges of the querying role (not the view owner's), which has no access to
-- schema core. The functions apply the same rule as the policies, on the indexes: a customer's rows come from
-- orders_user_id_created_at_idx, not from a scan of every order.
begin;

set local role app_owner;

create or replace function api.get_order(order_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  document jsonb := core.order_json(get_order.order_id);
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

create or replace function api.order_rows()
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

create or replace function api.order_item_rows()
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

commit;
