-- Deploy commercecore:procedures/orders/changes to pg
-- requires: procedures/orders/common
-- requires: procedures/orders/limits
-- requires: procedures/guards
-- Changing a pending order: a line's quantity, a line removed, the whole order cancelled. Lock order, as in
-- api.create_order: the owner's lock (when units are added), then the order row, then the product rows it
-- touches in product id order; stock moves only through ledger rows, and the order total follows its items by
-- trigger.
begin;

set local role app_owner;

create or replace function api.modify_order(order_id bigint, product_id bigint, quantity integer)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.require_customer();
  target core.orders;
  owner_id bigint;
  item core.order_items;
  product core.products;
  change integer;
  line_count integer;
begin
  if modify_order.quantity is null or modify_order.quantity not between 0 and 10000 then
    perform core.raise_invalid(
      'quantity', 'quantity must be a whole number from 1 to 10000.',
      jsonb_build_object('min', 1, 'max', 10000), 'Give the line''s new quantity.'
    );
  elsif modify_order.quantity = 0 then
    perform core.raise_invalid(
      'quantity', 'quantity must be at least 1; to remove the line, delete it.',
      jsonb_build_object('min', 1, 'max', 10000), 'DELETE /orders/{order_id}/items/{product_id} removes a line.'
    );
  end if;

  -- the owner's lock first (the lock order of create_order): units added here count against the owner's
  -- limits, whoever makes the change; an order the request may not see is left to lock_pending_order's 404
  select o.user_id into owner_id from core.orders as o where o.id = modify_order.order_id;
  if found then
    perform core.lock_customer_orders(owner_id);
  end if;
  target := core.lock_pending_order(modify_order.order_id);
  perform core.check_unpaid_age(target);
  select i.* into item
  from core.order_items as i
  where i.order_id = target.id and i.product_id = modify_order.product_id;
  select p.* into product from core.products as p where p.id = modify_order.product_id for no key update;

  if item.product_id is null then
    -- a new line, at the product's current price
    if product.id is null or not product.active then
      perform core.raise_invalid(
        'product_id', 'This product does not exist or is not for sale.',
        jsonb_build_object('reason', 'product_unavailable', 'product_id', modify_order.product_id),
        'Choose a product of the catalog.'
      );
    end if;
    if product.currency <> target.currency then
      perform core.raise_invalid(
        'product_id', format('This product is priced in %s and the order in %s.', product.currency, target.currency),
        jsonb_build_object(
          'reason', 'currency_mismatch', 'product_id', product.id, 'currency', product.currency,
          'order_currency', target.currency
        ),
        'Place a separate order for products in another currency.'
      );
    end if;
    select count(*) into line_count from core.order_items as i where i.order_id = target.id;
    if line_count >= 100 then
      perform core.raise_invalid(
        'product_id', 'An order has at most 100 lines.',
        jsonb_build_object('reason', 'too_many_lines', 'max', 100), 'Place another order.'
      );
    end if;
    perform core.check_order_limits(target.user_id, array[product.id], array[modify_order.quantity]);
    if product.stock < modify_order.quantity then
      perform core.raise_insufficient_stock(product.id, modify_order.quantity, product.stock);
    end if;
    insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
    values (target.id, product.id, target.user_id, modify_order.quantity, product.price_minor);
    insert into core.inventory_movements (product_id, delta, reason, order_id, actor_user_id)
    values (product.id, -modify_order.quantity, 'order_change', target.id, uid);
  else
    -- an existing line keeps its price; only the quantity and the stock move
    change := modify_order.quantity - item.quantity;
    if change > 0 and not product.active then
      perform core.raise_invalid(
        'quantity', 'This product is no longer for sale: its quantity can only go down.',
        jsonb_build_object('reason', 'product_unavailable', 'product_id', product.id),
        'Lower the quantity or delete the line.'
      );
    end if;
    if change > 0 then
      perform core.check_order_limits(target.user_id, array[product.id], array[change]);
    end if;
    if change > 0 and product.stock < change then
      perform core.raise_insufficient_stock(product.id, change, product.stock);
    end if;
    if change <> 0 then
      update core.order_items as i set quantity = modify_order.quantity
      where i.order_id = target.id and i.product_id = product.id;
      insert into core.inventory_movements (product_id, delta, reason, order_id, actor_user_id)
      values (product.id, -change, 'order_change', target.id, uid);
    end if;
  end if;
  return core.order_json(target.id);
end;
$$;

comment on function api.modify_order(bigint, bigint, integer) is
'Sets the quantity (1..10000) of a product in a pending order and returns the order. A product not yet in
the order is added at its current price (it must be active and in the order''s currency); an existing line
keeps its price. Stock moves by the difference (ledger reason order_change); for a larger quantity,
requested in insufficient_stock is the number of additional units. Quantity 0 is refused: delete the line.
Staff may change any order. Added units count against the order owner''s limit for the product (see
create_order); an order past its maximum unpaid age (ORDER_MAX_UNPAID_AGE from its creation) can no longer
be changed, only cancelled.
Errors: 404 not_found (missing or not yours, the same); 409 order_not_editable, order_expired,
per_customer_limit, insufficient_stock; 422 invalid_input (quantity, product_id).
@route PATCH /orders/{order_id}/items/{product_id}';

grant execute on function api.modify_order(bigint, bigint, integer) to app_readwrite, app_admin;

create or replace function api.delete_product_in_order(order_id bigint, product_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.require_customer();
  target core.orders;
  item core.order_items;
begin
  target := core.lock_pending_order(delete_product_in_order.order_id);
  select i.* into item
  from core.order_items as i
  where i.order_id = target.id and i.product_id = delete_product_in_order.product_id;
  if not found then
    perform core.raise_error(
      '404', 'not_found', 'This product is not in the order.',
      jsonb_build_object(
        'resource', 'order_item', 'order_id', target.id, 'product_id', delete_product_in_order.product_id
      ),
      'GET /orders/{order_id} lists the order''s items.'
    );
  end if;
  perform from core.products as p where p.id = item.product_id for no key update;
  delete from core.order_items as i where i.order_id = target.id and i.product_id = item.product_id;
  insert into core.inventory_movements (product_id, delta, reason, order_id, actor_user_id)
  values (item.product_id, item.quantity, 'order_change', target.id, uid);
  return core.order_json(target.id);
end;
$$;

comment on function api.delete_product_in_order(bigint, bigint) is
'Removes a product''s line from a pending order, puts its units back in stock (ledger reason order_change),
and returns the order. Removing the last line leaves an empty pending order (total 0) that can get new lines
with PATCH; it cannot be paid, and unpaid orders expire. Cancel it to close it at once.
Errors: 404 not_found (the order missing or not yours, or the product not in it); 409 order_not_editable.
@route DELETE /orders/{order_id}/items/{product_id}';

grant execute on function api.delete_product_in_order(bigint, bigint) to app_readwrite, app_admin;

create or replace function api.cancel_order(order_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.require_customer();
  target core.orders;
begin
  target := core.lock_pending_order(cancel_order.order_id);
  perform from core.products as p
  where p.id in (select i.product_id from core.order_items as i where i.order_id = target.id)
  order by p.id
  for no key update;
  insert into core.inventory_movements (product_id, delta, reason, order_id, actor_user_id)
  select i.product_id, i.quantity, 'order_cancel', target.id, uid
  from core.order_items as i
  where i.order_id = target.id
  order by i.product_id;
  update core.orders as o
  set
    status = 'cancelled',
    cancelled_at = now(),
    cancel_reason = case when target.user_id = uid then 'customer' else 'staff' end
  where o.id = target.id;
  return core.order_json(target.id);
end;
$$;

comment on function api.cancel_order(bigint) is
'Cancels a pending order and puts all its units back in stock (ledger reason order_cancel); returns the
order. The items stay on the cancelled order as its history. cancel_reason is customer when the owner
cancels, staff when staff cancels someone else''s order.
Errors: 404 not_found (missing or not yours, the same); 409 order_not_editable.
@route POST /orders/{order_id}/cancel';

grant execute on function api.cancel_order(bigint) to app_readwrite, app_admin;

commit;
