-- Deploy commercecore:procedures/orders/placing to pg
-- requires: procedures/orders/common
-- requires: procedures/catalog/shards
-- The steps of api.create_order after the items are checked, in the order it takes them: the shipping
-- address, the products as they are now (for sale, one currency), then the stock locked and checked again
-- (the product rows, and the shards of products in flash-sale mode), and last the order, its lines at the
-- catalog's prices and its ledger rows in one statement, whose result is the order's document (nothing is
-- read back). Lock order: the customer (core.check_order_limits), then the product rows in product id order,
-- then the flash-sale shards by product id and shard, all taken after the work that needs no lock, so that
-- buyers of a popular product queue for the writes and the commit alone (and in flash-sale mode not at all).
begin;

set local role app_owner;

-- the steps of the tagged version that the one statement of core.place_order replaces: internal functions
-- of create_order, which no role but the owner may call
-- squawk-ignore-file ban-drop-function
drop function core.take_stock(bigint, bigint, bigint[], integer[]);
drop function core.insert_order_lines(bigint, bigint, bigint[], integer[]);
drop function core.lock_order_products(bigint[], integer[], text);
drop function core.insert_order(bigint, text, core.addresses);

create or replace function core.order_shipping_address(customer_id bigint, address_id bigint)
returns core.addresses
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  address core.addresses;
begin
  -- the caller's own (staff included); by default the default one, and none when there is no default
  if order_shipping_address.address_id is not null then
    select a.* into address
    from core.addresses as a
    where
      a.id = order_shipping_address.address_id
      and a.user_id = order_shipping_address.customer_id
      and a.kind = 'shipping';
    if not found then
      perform core.raise_not_found(
        'address', order_shipping_address.address_id, 'List your addresses with GET /me/addresses.',
        message => 'There is no shipping address with this id.'
      );
    end if;
  else
    select a.* into address
    from core.addresses as a
    where a.user_id = order_shipping_address.customer_id and a.kind = 'shipping' and a.is_default;
  end if;
  return address;
end;
$$;

comment on function core.order_shipping_address(bigint, bigint) is
'The shipping address of a new order: the customer''s shipping address address_id (PT404 not_found when it
is not one), or without it the customer''s default shipping address, or null.';

create or replace function core.order_currency(product_ids bigint[])
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  seen record;
begin
  -- the products as this statement sees them (not locked yet), in one look: the first (by id) missing or not
  -- for sale, and the currencies
  select
    (
      select u.product_id from unnest(order_currency.product_ids) as u (product_id)
      left join core.products as p on u.product_id = p.id
      where p.id is null or not p.active
      order by u.product_id limit 1
    ) as unavailable,
    (
      select array_agg(distinct p.currency order by p.currency) from core.products as p
      where p.id = any(order_currency.product_ids)
    ) as currencies
  into seen;
  if seen.unavailable is not null then
    perform core.raise_invalid(
      'items', 'A product of the order does not exist or is not for sale.',
      jsonb_build_object('reason', 'product_unavailable', 'product_id', seen.unavailable),
      'Remove the product from the order.'
    );
  end if;
  if cardinality(seen.currencies) > 1 then
    perform core.raise_invalid(
      'items', 'The products of one order must have the same currency.',
      jsonb_build_object('reason', 'mixed_currencies', 'currencies', to_jsonb(seen.currencies)),
      'Place one order per currency.'
    );
  end if;
  return seen.currencies[1];
end;
$$;

comment on function core.order_currency(bigint[]) is
'The one currency of the products of a new order, read without a lock; PT422 invalid_input (field items)
with reason product_unavailable {product_id} for a product missing or not for sale, mixed_currencies
{currencies} for more than one currency.';

create or replace function core.lock_order_stock(product_ids bigint[], quantities integer[], currency text)
returns table (product_id bigint, shard smallint, units integer)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  locked bigint[];
  line record;
  short record;
begin
  -- the rows of the products not in flash-sale mode, FOR NO KEY UPDATE (the lock the stock update takes),
  -- in id order; their lines' foreign key checks (FOR KEY SHARE) then cost nothing
  select coalesce(array_agg(l.id), '{}') into locked
  from (
    select p.id from core.products as p
    where p.id = any(lock_order_stock.product_ids) and p.stock_shards = 1
    order by p.id
    for no key update
  ) as l;
  -- the products as they now are (each statement sees what committed before it): sale stopped, currency
  -- changed, stock
  select u.product_id into line
  from unnest(lock_order_stock.product_ids) as u (product_id)
  join core.products as p on u.product_id = p.id
  where not p.active or p.currency <> lock_order_stock.currency
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
  from unnest(lock_order_stock.product_ids, lock_order_stock.quantities) as u (product_id, quantity)
  join core.products as p on u.product_id = p.id
  where u.product_id = any(locked) and p.stock < u.quantity
  order by u.product_id
  limit 1;
  -- the flash-sale products (if any), in id order, from their shards; the first short product (by id) is
  -- reported
  if cardinality(locked) < cardinality(lock_order_stock.product_ids) then
    for line in
      select u.product_id, u.quantity, p.stock_shards
      from unnest(lock_order_stock.product_ids, lock_order_stock.quantities) as u (product_id, quantity)
      join core.products as p on u.product_id = p.id
      where u.product_id <> all(locked)
      order by u.product_id
    loop
      if short.product_id < line.product_id then
        exit;
      elsif line.stock_shards = 1 then
        perform core.stock_mode_changed(line.product_id);
      end if;
      return query select line.product_id, t.shard, t.units
      from core.take_shard_units(line.product_id, line.stock_shards, line.quantity) as t;
    end loop;
  end if;
  if short.product_id is not null then
    perform core.raise_insufficient_stock(short.product_id, short.quantity, short.stock);
  end if;
  return query select u.product_id, null::smallint, u.quantity
  from unnest(lock_order_stock.product_ids, lock_order_stock.quantities) as u (product_id, quantity)
  where u.product_id = any(locked);
end;
$$;

comment on function core.lock_order_stock(bigint[], integer[], text) is
'Locks the stock of a new order and returns where its units come from (product_id, shard, units; shard
null: the product row): the rows of the products not in flash-sale mode (FOR NO KEY UPDATE, in id order),
then for each flash-sale product the shards core.take_shard_units picks. Under the locks the products are
checked again as they now are: PT422 invalid_input product_unavailable when one is no longer for sale in
the currency, PT409 insufficient_stock for the first (by id) short of its quantity.';

create or replace function core.place_order(
  customer_id bigint, currency text, address core.addresses, product_ids bigint[], quantities integer[],
  take_products bigint[], take_shards smallint[], take_units integer[]
)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  document jsonb;
begin
  -- one statement: the order with the total of its lines, the lines, the ledger rows; the foreign keys and
  -- the statement triggers (the total checked against the lines, the stock moved) run at its end. The
  -- document is built from what the statement wrote, as core.order_json shapes it.
  with lines as (
    select u.product_id, u.quantity, p.price_minor, p.sku, p.name
    from unnest(place_order.product_ids, place_order.quantities) as u (product_id, quantity)
    join core.products as p on u.product_id = p.id
  ),

  new_order as (
    insert into core.orders (user_id, currency, total_minor, shipping_address_id, shipping_address)
    select
      place_order.customer_id,
      place_order.currency,
      (select coalesce(sum(l.quantity::bigint * l.price_minor), 0) from lines as l),
      (place_order.address).id,
      case when (place_order.address).id is not null then
        jsonb_build_object(
          'address_id', (place_order.address).id,
          'full_name', (place_order.address).full_name,
          'line1', (place_order.address).line1,
          'line2', (place_order.address).line2,
          'city', (place_order.address).city,
          'region', (place_order.address).region,
          'postal_code', (place_order.address).postal_code,
          'country', (place_order.address).country,
          'phone', (place_order.address).phone
        )
      end
    returning *
  ),

  items as (
    insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
    select o.id, l.product_id, o.user_id, l.quantity, l.price_minor
    from new_order as o cross join lines as l
    order by l.product_id
    returning product_id
  ),

  moved as (
    insert into core.inventory_movements (product_id, shard, delta, reason, order_id, actor_user_id)
    select t.product_id, t.shard, -t.units, 'order', o.id, o.user_id
    from new_order as o
    cross join unnest(place_order.take_products, place_order.take_shards, place_order.take_units) as t (product_id, shard, units)
    order by t.product_id, t.shard
    returning product_id
  )

  select
    jsonb_build_object(
      'id', o.id,
      'user_id', o.user_id,
      'status', o.status,
      'currency', o.currency,
      'total_minor', o.total_minor,
      'refunded_minor', o.refunded_minor,
      'items', (
        select
          jsonb_agg(
            jsonb_build_object(
              'product_id', l.product_id,
              'sku', l.sku,
              'name', l.name,
              'quantity', l.quantity,
              'unit_price_minor', l.price_minor,
              'line_total_minor', l.quantity::bigint * l.price_minor
            )
            order by l.product_id
          )
        from lines as l
      ),
      'shipping_address', o.shipping_address,
      'cancel_reason', o.cancel_reason,
      'created_at', o.created_at,
      'updated_at', o.updated_at,
      'paid_at', o.paid_at,
      'cancelled_at', o.cancelled_at
    )
  into document
  from new_order as o;
  return document;
end;
$$;

comment on function core.place_order(
  bigint, text, core.addresses, bigint[], integer[], bigint[], smallint[], integer[]
) is
'Writes a new pending order of the customer in one statement, with a snapshot of the shipping address (none
when address is null): the order with its total, its lines at the catalog''s prices now (product_ids and
quantities, locked by core.lock_order_stock), and the ledger rows of reason order (take_products,
take_shards, take_units: what core.lock_order_stock returned). Returns the order''s document (the shape of
core.order_json).';

commit;
