-- Deploy commercecore:procedures/orders/common to pg
-- requires: schema/orders
-- requires: procedures/errors
-- What the order functions share: the order shape of the API, the lock (and checks) of an order about to
-- change, and the error of a product short of stock.
begin;

set local role app_owner;

create or replace function core.order_json(order_id bigint)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select
    jsonb_build_object(
      'id', o.id,
      'user_id', o.user_id,
      'status', o.status,
      'currency', o.currency,
      'total_minor', o.total_minor,
      'refunded_minor', o.refunded_minor,
      'items', coalesce(
        (
          select
            jsonb_agg(
              jsonb_build_object(
                'product_id', i.product_id,
                'sku', p.sku,
                'name', p.name,
                'quantity', i.quantity,
                'unit_price_minor', i.unit_price_minor,
                'line_total_minor', i.quantity::bigint * i.unit_price_minor
              )
              order by i.product_id
            )
          from core.order_items as i
          join core.products as p on i.product_id = p.id
          where i.order_id = o.id
        ),
        '[]'::jsonb
      ),
      'shipping_address', o.shipping_address,
      'cancel_reason', o.cancel_reason,
      'created_at', o.created_at,
      'updated_at', o.updated_at,
      'paid_at', o.paid_at,
      'cancelled_at', o.cancelled_at
    )
  from core.orders as o
  where o.id = order_json.order_id
$$;

comment on function core.order_json(bigint) is
'The order shape of the API (docs/http-api.md section 6) for one order: {id, user_id, status, currency,
total_minor, refunded_minor, items: [{product_id, sku, name, quantity, unit_price_minor, line_total_minor}]
by product id, shipping_address (snapshot), cancel_reason, created_at, updated_at, paid_at, cancelled_at}.
Row-level security applies: null for an order the request may not see.';

create or replace function core.lock_pending_order(order_id bigint)
returns core.orders
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  target core.orders;
begin
  -- row-level security hides other customers' orders: theirs and missing ones get the same 404
  select o.* into target from core.orders as o where o.id = lock_pending_order.order_id for update;
  if not found then
    perform core.raise_not_found('order', lock_pending_order.order_id, 'List your orders with GET /orders.');
  end if;
  if target.status <> 'pending' then
    perform core.raise_error(
      '409', 'order_not_editable', format('The order is %s and can no longer be changed.', target.status),
      jsonb_build_object('order_id', target.id, 'status', target.status),
      'Only pending orders can be changed or cancelled.'
    );
  end if;
  return target;
end;
$$;

comment on function core.lock_pending_order(bigint) is
'Locks an order the request may see (FOR UPDATE) and returns it; PT404 not_found when it does not exist or is
not the caller''s, PT409 order_not_editable unless it is pending. Always the first lock of an order change.';

create or replace function core.raise_insufficient_stock(product_id bigint, requested bigint, available integer)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform core.raise_error(
    '409', 'insufficient_stock', 'Not enough stock for this product.',
    jsonb_build_object(
      'product_id', raise_insufficient_stock.product_id, 'requested', raise_insufficient_stock.requested,
      'available', raise_insufficient_stock.available
    ),
    'Order at most the available quantity.'
  );
end;
$$;

comment on function core.raise_insufficient_stock(bigint, bigint, integer) is
'Raises PT409 insufficient_stock {product_id, requested, available}.';

commit;
