-- Deploy commercecore:procedures/orders/create to pg
-- requires: procedures/orders/items
-- requires: procedures/orders/placing
-- requires: procedures/orders/idempotency
-- requires: procedures/orders/limits
-- requires: procedures/guards
-- POST /orders: api.create_order runs its named steps in one transaction, in the lock order of the order
-- functions: the idempotency key (core.replay_idempotent), the customer (core.check_order_limits), then the
-- stock (core.lock_order_stock: the product rows in product id order, then the shards of flash-sale
-- products), and writes the order, its lines and its ledger rows in one statement (core.place_order). A
-- customer's unpaid orders are limited in number and in units per product, counted under the customer's
-- lock, so that no account can take the stock and keep it unpaid.
begin;

set local role app_owner;

create or replace function api.create_order(
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
  product_ids bigint[];
  quantities integer[];
  address core.addresses;
  order_currency text;
  takes record;
  document jsonb;
begin
  if create_order.idempotency_key is not null then
    body_hash := core.idempotency_hash(
      create_order.idempotency_key,
      jsonb_build_object('items', create_order.items, 'shipping_address_id', create_order.shipping_address_id)
    );
    stored := core.replay_idempotent(uid, this_endpoint, create_order.idempotency_key, body_hash);
    if stored.key is not null then
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

  select parsed.product_ids, parsed.quantities into product_ids, quantities
  from core.parse_order_items(create_order.items) as parsed;
  address := core.order_shipping_address(uid, create_order.shipping_address_id);
  order_currency := core.order_currency(product_ids);
  -- the customer's limits, under the customer's lock (held to the commit): a second request of the same
  -- customer counts this order too
  perform core.check_order_limits(uid, product_ids, quantities, new_order => true);
  select array_agg(t.product_id) as products, array_agg(t.shard) as shards, array_agg(t.units) as units
  into takes
  from core.lock_order_stock(product_ids, quantities, order_currency) as t;
  document := core.place_order(
    uid, order_currency, address, product_ids, quantities, takes.products, takes.shards, takes.units
  );
  if create_order.idempotency_key is not null then
    perform core.store_idempotent(uid, this_endpoint, create_order.idempotency_key, body_hash, 201, document);
  end if;
  perform set_config('response.status', '201', true);
  perform set_config(
    'response.headers', jsonb_build_array(jsonb_build_object('Location', '/orders/' || (document ->> 'id')))::text,
    true
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
that is short fails the whole order. A product in flash-sale mode (stock_shards > 1) gives its units from
whichever of its shards is free, and is short only when all of them together are.
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

commit;
