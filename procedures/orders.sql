-- Deploy commercecore:procedures/orders to pg
-- requires: schema/orders
-- requires: schema/idempotency
-- requires: views/products
-- requires: schema/errors
-- Placing and changing orders. Lock order: the customer (an advisory lock, in create_order and
-- modify_order, the functions that add units), then the order row (when there is one), then the product rows
-- it touches in product id order, so concurrent orders queue instead of deadlocking; stock moves only
-- through ledger rows, and the order total follows its items by trigger. A customer's unpaid orders are
-- limited in number and in units per product, counted under the customer's lock, so that no account can
-- take the stock and keep it unpaid.
begin;

set local role app_owner;

create function core.order_document(order_id bigint)
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
  where o.id = order_document.order_id
$$;

comment on function core.order_document(bigint) is
'The order shape of the API (docs/http-api.md section 6) for one order: {id, user_id, status, currency,
total_minor, refunded_minor, items: [{product_id, sku, name, quantity, unit_price_minor, line_total_minor}]
by product id, shipping_address (snapshot), cancel_reason, created_at, updated_at, paid_at, cancelled_at}.
Row-level security applies: null for an order the request may not see.';

create function core.require_customer()
returns bigint
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.current_user_id();
begin
  if uid is null or not exists (select from core.users as u where u.id = uid) then
    perform core.raise_error('401', 'unauthenticated', 'Sign in to order.', hint => 'Send a valid access token.');
  end if;
  return uid;
end;
$$;

comment on function core.require_customer() is
'The signed-in user''s id; raises PT401 unauthenticated when the request has no (existing) user.';

create function core.lock_pending_order(order_id bigint)
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

create function core.raise_insufficient_stock(product_id bigint, requested bigint, available integer)
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

create function core.is_whole_number(candidate jsonb, low numeric, high numeric)
returns boolean
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  amount numeric;
begin
  if jsonb_typeof(is_whole_number.candidate) is distinct from 'number' then
    return false;
  end if;
  amount := is_whole_number.candidate::numeric;
  return amount = trunc(amount) and amount between is_whole_number.low and is_whole_number.high;
end;
$$;

comment on function core.is_whole_number(jsonb, numeric, numeric) is
'True when a JSON value is a number without fraction within [low, high] (1, 2.0 and 1e2 are whole; "1" is not).';

create function core.lock_customer_orders(customer_id bigint)
returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  select pg_advisory_xact_lock(hashtextextended('commercecore.customer_orders|' || lock_customer_orders.customer_id, 0))
$$;

comment on function core.lock_customer_orders(bigint) is
'Takes the transaction lock of one customer''s unpaid orders (an advisory lock): the requests that add units
to a customer''s orders queue on it, so what the customer holds is counted while nothing else adds to it.
The first lock of create_order and modify_order, before any order or product row.';

create function core.check_order_limits(
  customer_id bigint, product_ids bigint[], added integer[], new_order boolean default false
)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  open_limit integer := core.max_open_orders();
  open_count integer;
  over record;
begin
  perform core.lock_customer_orders(check_order_limits.customer_id);
  if check_order_limits.new_order then
    select count(*) into open_count
    from core.orders as o
    where o.user_id = check_order_limits.customer_id and o.status = 'pending';
    if open_count >= open_limit then
      perform core.raise_error(
        '409', 'too_many_open_orders',
        format('There are %s unpaid orders already: a customer may have at most %s.', open_count, open_limit),
        jsonb_build_object('limit', open_limit, 'open_orders', open_count),
        'Pay or cancel an unpaid order first, or add the products to one of them.'
      );
    end if;
  end if;

  -- what the customer's unpaid orders hold of each product, the units asked for now included
  select
    u.product_id,
    u.added,
    coalesce(h.held, 0) as held,
    coalesce(p.max_per_customer, core.max_units_per_product()) as max_units
  into over
  from unnest(check_order_limits.product_ids, check_order_limits.added) as u (product_id, added)
  join core.products as p on u.product_id = p.id
  left join lateral (
    select sum(i.quantity) as held
    from core.orders as o
    join core.order_items as i on o.id = i.order_id
    where o.user_id = check_order_limits.customer_id and o.status = 'pending' and i.product_id = u.product_id
  ) as h on true
  where u.added > 0 and coalesce(h.held, 0) + u.added > coalesce(p.max_per_customer, core.max_units_per_product())
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_error(
      '409', 'per_customer_limit',
      format('A customer may hold at most %s units of this product in unpaid orders.', over.max_units),
      jsonb_build_object(
        'product_id', over.product_id, 'limit', over.max_units, 'held', over.held, 'requested', over.added,
        'remaining', greatest(over.max_units - over.held, 0)
      ),
      format(
        'Order at most %s more units of this product, or pay or cancel the unpaid orders that hold it.',
        greatest(over.max_units - over.held, 0)
      )
    );
  end if;
end;
$$;

comment on function core.check_order_limits(bigint, bigint[], integer[], boolean) is
'The limits on one customer''s unpaid (pending) orders, checked under the customer''s lock
(core.lock_customer_orders, taken here if the caller has not yet): with new_order, at most
core.max_open_orders() of them (PT409 too_many_open_orders {limit, open_orders}); for each product,
the units held in them plus the units added now at most the product''s max_per_customer, else
core.max_units_per_product() (PT409 per_customer_limit {product_id, limit, held, requested, remaining}).
Units a request gives back are never refused.';

create function api.create_order(
  items jsonb,
  shipping_address_id bigint default null,
  idempotency_key text default null
)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  this_endpoint constant text := 'POST /orders';
  uid bigint := core.require_customer();
  body_hash text;
  stored core.idempotency_keys;
  line record;
  product_ids bigint[];
  quantities integer[];
  bad_field text;
  bad_reason text;
  short record;
  currencies text[];
  address core.addresses;
  new_order_id bigint;
  document jsonb;
  stored_rows integer;
begin
  if create_order.idempotency_key is not null then
    if length(create_order.idempotency_key) not between 1 and 255 then
      perform core.raise_invalid(
        'idempotency_key', 'The idempotency key must be 1 to 255 characters.',
        hint => 'Send a fresh random key (a UUID) per order in the Idempotency-Key header.'
      );
    end if;
    body_hash := encode(
      sha256(convert_to(
        jsonb_build_object('items', create_order.items, 'shipping_address_id', create_order.shipping_address_id)::text,
        'UTF8'
      )),
      'hex'
    );
    -- one request per key at a time: a concurrent duplicate waits here, then finds the stored response
    perform pg_advisory_xact_lock(hashtextextended(format('%s|%s|%s', uid, this_endpoint, create_order.idempotency_key), 0));
    select k.* into stored
    from core.idempotency_keys as k
    where k.user_id = uid and k.endpoint = this_endpoint and k.key = create_order.idempotency_key;
    if found and stored.created_at < now() - interval '24 hours' then
      -- keys are kept 24 hours: an older one is forgotten and the key starts afresh
      delete from core.idempotency_keys as k
      where k.user_id = uid and k.endpoint = this_endpoint and k.key = create_order.idempotency_key;
    elsif found and stored.request_hash <> body_hash then
      perform core.raise_error(
        '422', 'idempotency_key_reused', 'This idempotency key was already used for another request.',
        jsonb_build_object('field', 'idempotency_key'),
        'Use a new key for a new order; retry with the same key only with the same body.'
      );
    elsif found then
      perform set_config('response.status', stored.status_code::text, true);
      perform set_config(
        'response.headers',
        jsonb_build_array(
          jsonb_build_object('Location', '/orders/' || (stored.response ->> 'id')),
          jsonb_build_object('Idempotent-Replayed', 'true')
        )::text,
        true
      );
      return stored.response;
    end if;
  end if;

  -- the items: an array of 1..100 {product_id, quantity}; no other key is accepted (prices come from the
  -- catalog, never from the request); lines of the same product are merged
  if jsonb_typeof(create_order.items) is distinct from 'array' then
    perform core.raise_invalid(
      'items', 'items must be an array of {product_id, quantity}.',
      hint => 'Send for example {"items": [{"product_id": 1, "quantity": 2}]}.'
    );
  end if;
  if jsonb_array_length(create_order.items) not between 1 and 100 then
    perform core.raise_invalid(
      'items', 'An order has 1 to 100 lines.',
      jsonb_build_object('min', 1, 'max', 100, 'count', jsonb_array_length(create_order.items)),
      'Split a larger order in several.'
    );
  end if;
  for line in
    select e.value, e.ordinality - 1 as position
    from jsonb_array_elements(create_order.items) with ordinality as e
  loop
    bad_field := null;
    if jsonb_typeof(line.value) <> 'object' then
      bad_field := format('items[%s]', line.position);
      bad_reason := 'must be an object {product_id, quantity}';
    else
      select format('items[%s].%s', line.position, k.name) into bad_field
      from jsonb_object_keys(line.value) as k (name)
      where k.name not in ('product_id', 'quantity')
      order by k.name
      limit 1;
      bad_reason := 'is not accepted: an item has only product_id and quantity, prices come from the catalog';
      if bad_field is null and not core.is_whole_number(line.value -> 'product_id', 1, 9223372036854775807) then
        bad_field := format('items[%s].product_id', line.position);
        bad_reason := 'must be a product id';
      elsif bad_field is null and not core.is_whole_number(line.value -> 'quantity', 1, 10000) then
        bad_field := format('items[%s].quantity', line.position);
        bad_reason := 'must be a whole number from 1 to 10000';
      end if;
    end if;
    if bad_field is not null then
      perform core.raise_invalid(
        bad_field, format('%s %s.', bad_field, bad_reason),
        hint => 'Each item is {"product_id": <id>, "quantity": <1..10000>}.'
      );
    end if;
  end loop;

  select array_agg(m.product_id order by m.product_id), array_agg(m.quantity order by m.product_id)
  into product_ids, quantities
  from (
    select
      (e.value ->> 'product_id')::numeric::bigint as product_id,
      sum((e.value ->> 'quantity')::numeric::integer) as quantity
    from jsonb_array_elements(create_order.items) as e
    group by 1
  ) as m;
  select u.product_id into line
  from unnest(product_ids, quantities) as u (product_id, quantity)
  where u.quantity > 10000
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_invalid(
      'items', 'The lines of one product add up to more than 10000 units.',
      jsonb_build_object('product_id', line.product_id), 'Order at most 10000 units of a product.'
    );
  end if;

  -- the shipping address: the caller's own (staff included), snapshotted; by default the default one
  if create_order.shipping_address_id is not null then
    select a.* into address
    from core.addresses as a
    where a.id = create_order.shipping_address_id and a.user_id = uid and a.kind = 'shipping';
    if not found then
      perform core.raise_not_found(
        'address', create_order.shipping_address_id, 'List your addresses with GET /me/addresses.',
        message => 'There is no shipping address with this id.'
      );
    end if;
  else
    select a.* into address
    from core.addresses as a
    where a.user_id = uid and a.kind = 'shipping' and a.is_default;
  end if;

  -- the products as this statement sees them (not locked yet): they must exist, be for sale and share a
  -- currency
  select u.product_id into line
  from unnest(product_ids) as u (product_id)
  left join core.products as p on u.product_id = p.id
  where p.id is null or not p.active
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_invalid(
      'items', 'A product of the order does not exist or is not for sale.',
      jsonb_build_object('reason', 'product_unavailable', 'product_id', line.product_id),
      'Remove the product from the order.'
    );
  end if;
  select array_agg(distinct p.currency order by p.currency) into currencies
  from core.products as p
  where p.id = any(product_ids);
  if cardinality(currencies) > 1 then
    perform core.raise_invalid(
      'items', 'The products of one order must have the same currency.',
      jsonb_build_object('reason', 'mixed_currencies', 'currencies', to_jsonb(currencies)),
      'Place one order per currency.'
    );
  end if;

  -- the customer's limits, under the customer's lock (held to the commit): a second request of the same
  -- customer counts this order too
  perform core.check_order_limits(uid, product_ids, quantities, new_order => true);

  insert into core.orders (user_id, currency, shipping_address_id, shipping_address)
  values (
    uid,
    currencies[1],
    address.id,
    case when address.id is not null then
      jsonb_build_object(
        'address_id', address.id,
        'full_name', address.full_name,
        'line1', address.line1,
        'line2', address.line2,
        'city', address.city,
        'region', address.region,
        'postal_code', address.postal_code,
        'country', address.country,
        'phone', address.phone
      )
    end
  )
  returning core.orders.id into new_order_id;

  -- the stock: the product rows are locked only now, in id order (the global lock order), after all the
  -- work that needs no lock, so buyers of a popular product queue for the lines, the ledger rows and the
  -- commit alone. FOR NO KEY UPDATE, the lock the stock update itself takes. The lines come after the
  -- lock: their foreign key checks (FOR KEY SHARE) on a row this transaction has locked cost nothing,
  -- where on a row another buyer holds they would build a multixact of every waiting buyer.
  -- Under the lock the products are checked again as they now are (sale stopped, currency changed, stock).
  perform from core.products as p where p.id = any(product_ids) order by p.id for no key update;
  select u.product_id into line
  from unnest(product_ids) as u (product_id)
  join core.products as p on u.product_id = p.id
  where not p.active or p.currency <> currencies[1]
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_invalid(
      'items', 'A product of the order is no longer for sale in this currency.',
      jsonb_build_object('reason', 'product_unavailable', 'product_id', line.product_id),
      'Place the order again.'
    );
  end if;
  select u.product_id, u.quantity, p.stock into short
  from unnest(product_ids, quantities) as u (product_id, quantity)
  join core.products as p on u.product_id = p.id
  where p.stock < u.quantity
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_insufficient_stock(short.product_id, short.quantity, short.stock);
  end if;

  insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
  select new_order_id, u.product_id, uid, u.quantity, p.price_minor
  from unnest(product_ids, quantities) as u (product_id, quantity)
  join core.products as p on u.product_id = p.id
  order by u.product_id;

  insert into core.inventory_movements (product_id, delta, reason, order_id, actor_user_id)
  select u.product_id, -u.quantity, 'order', new_order_id, uid
  from unnest(product_ids, quantities) as u (product_id, quantity)
  order by u.product_id;

  document := core.order_document(new_order_id);
  if create_order.idempotency_key is not null then
    insert into core.idempotency_keys (user_id, key, endpoint, request_hash, status_code, response)
    values (uid, create_order.idempotency_key, this_endpoint, body_hash, 201, document)
    on conflict do nothing;
    get diagnostics stored_rows = row_count;
    if stored_rows = 0 then
      -- only when the key's row appeared after our look-up (a REPEATABLE READ caller): refuse, never doubled
      perform core.raise_error(
        '409', 'idempotency_key_in_use', 'Another request with this idempotency key is being processed.',
        jsonb_build_object('field', 'idempotency_key'), 'Retry the request: it will return the stored response.'
      );
    end if;
  end if;

  perform set_config('response.status', '201', true);
  perform set_config(
    'response.headers', jsonb_build_array(jsonb_build_object('Location', '/orders/' || new_order_id))::text, true
  );
  return document;
end;
$$;

comment on function api.create_order(jsonb, bigint, text) is
'Places an order for the signed-in user and returns it (201, Location /orders/{id}).
items: 1 to 100 lines {product_id, quantity 1..10000}; an item with any other key (a price, say) is refused,
since prices always come from the catalog; lines of the same product are merged (at most 10000 units per
product). All products must be active and of one currency. shipping_address_id must be one of the caller''s
shipping addresses; without it the default shipping address is used, if there is one; either way the
address is copied into the order. Stock is taken at once (ledger reason order); the first product (by id)
that is short fails the whole order.
idempotency_key (the Idempotency-Key header): the same key with the same items and shipping_address_id
within 24 hours returns the first response again, with its status and the header Idempotent-Replayed: true,
and places nothing; the same key with another body is 422 idempotency_key_reused.
Limits per customer, on unpaid (pending) orders: at most COMMERCECORE_MAX_OPEN_ORDERS of them (default 5)
and, per product, at most its max_per_customer units across them (else COMMERCECORE_MAX_UNITS_PER_PRODUCT,
default 100).
Errors: 401 unauthenticated; 404 not_found (address); 409 too_many_open_orders {limit, open_orders},
per_customer_limit {product_id, limit, held, requested, remaining}, insufficient_stock {product_id,
requested, available}; 422 invalid_input naming the field (items[i].quantity, ...) or
idempotency_key_reused.
@route POST /orders';

grant execute on function api.create_order(jsonb, bigint, text) to app_readwrite, app_admin;

create function api.modify_order(order_id bigint, product_id bigint, quantity integer)
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
  return core.order_document(target.id);
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

create function api.delete_product_in_order(order_id bigint, product_id bigint)
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
  return core.order_document(target.id);
end;
$$;

comment on function api.delete_product_in_order(bigint, bigint) is
'Removes a product''s line from a pending order, puts its units back in stock (ledger reason order_change),
and returns the order. Removing the last line leaves an empty pending order (total 0) that can get new lines
with PATCH; it cannot be paid, and unpaid orders expire. Cancel it to close it at once.
Errors: 404 not_found (the order missing or not yours, or the product not in it); 409 order_not_editable.
@route DELETE /orders/{order_id}/items/{product_id}';

grant execute on function api.delete_product_in_order(bigint, bigint) to app_readwrite, app_admin;

create function api.cancel_order(order_id bigint)
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
  return core.order_document(target.id);
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
