-- Deploy commercecore:procedures/orders/placing to pg
-- requires: procedures/orders/common
-- The steps of api.create_order after the items are checked, in the order it takes them: the shipping
-- address, the products as they are now (for sale, one currency), the order row, then the product rows
-- locked and checked again, the lines at the catalog's prices and the stock taken through the ledger.
-- Lock order: the customer (core.check_order_limits, before the order row), then the product rows in
-- product id order, taken only after all the work that needs no lock, so that buyers of a popular product
-- queue for the lines, the ledger rows and the commit alone.
begin;

set local role app_owner;

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
  line record;
  currencies text[];
begin
  -- the products as this statement sees them (not locked yet): they must exist, be for sale and share a
  -- currency
  select u.product_id into line
  from unnest(order_currency.product_ids) as u (product_id)
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
  where p.id = any(order_currency.product_ids);
  if cardinality(currencies) > 1 then
    perform core.raise_invalid(
      'items', 'The products of one order must have the same currency.',
      jsonb_build_object('reason', 'mixed_currencies', 'currencies', to_jsonb(currencies)),
      'Place one order per currency.'
    );
  end if;
  return currencies[1];
end;
$$;

comment on function core.order_currency(bigint[]) is
'The one currency of the products of a new order, read without a lock; PT422 invalid_input (field items)
with reason product_unavailable {product_id} for a product missing or not for sale, mixed_currencies
{currencies} for more than one currency.';

create or replace function core.insert_order(customer_id bigint, currency text, address core.addresses)
returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  new_order_id bigint;
begin
  insert into core.orders (user_id, currency, shipping_address_id, shipping_address)
  values (
    insert_order.customer_id,
    insert_order.currency,
    (insert_order.address).id,
    case when (insert_order.address).id is not null then
      jsonb_build_object(
        'address_id', (insert_order.address).id,
        'full_name', (insert_order.address).full_name,
        'line1', (insert_order.address).line1,
        'line2', (insert_order.address).line2,
        'city', (insert_order.address).city,
        'region', (insert_order.address).region,
        'postal_code', (insert_order.address).postal_code,
        'country', (insert_order.address).country,
        'phone', (insert_order.address).phone
      )
    end
  )
  returning core.orders.id into new_order_id;
  return new_order_id;
end;
$$;

comment on function core.insert_order(bigint, text, core.addresses) is
'Inserts a new pending order of the customer, in the currency, with a snapshot of the shipping address (none
when address is null), and returns its id. Its total follows the lines inserted next.';

create or replace function core.lock_order_products(product_ids bigint[], quantities integer[], currency text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  line record;
  short record;
begin
  -- FOR NO KEY UPDATE, the lock the stock update itself takes, in id order (the global lock order). The
  -- lines come after the lock: their foreign key checks (FOR KEY SHARE) on a row this transaction has locked
  -- cost nothing, where on a row another buyer holds they would build a multixact of every waiting buyer.
  -- Under the lock the products are checked again as they now are (sale stopped, currency changed, stock).
  perform from core.products as p where p.id = any(lock_order_products.product_ids) order by p.id for no key update;
  select u.product_id into line
  from unnest(lock_order_products.product_ids) as u (product_id)
  join core.products as p on u.product_id = p.id
  where not p.active or p.currency <> lock_order_products.currency
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
  from unnest(lock_order_products.product_ids, lock_order_products.quantities) as u (product_id, quantity)
  join core.products as p on u.product_id = p.id
  where p.stock < u.quantity
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_insufficient_stock(short.product_id, short.quantity, short.stock);
  end if;
end;
$$;

comment on function core.lock_order_products(bigint[], integer[], text) is
'Locks the products of a new order (FOR NO KEY UPDATE, in id order) and checks them as they now are: PT422
invalid_input product_unavailable when one is no longer for sale in the currency, PT409 insufficient_stock
for the first (by id) short of its quantity.';

create or replace function core.insert_order_lines(order_id bigint, customer_id bigint, product_ids bigint[], quantities integer[])
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
  select insert_order_lines.order_id, u.product_id, insert_order_lines.customer_id, u.quantity, p.price_minor
  from unnest(insert_order_lines.product_ids, insert_order_lines.quantities) as u (product_id, quantity)
  join core.products as p on u.product_id = p.id
  order by u.product_id;
end;
$$;

comment on function core.insert_order_lines(bigint, bigint, bigint[], integer[]) is
'Inserts the lines of a new order at the catalog''s prices now, in product id order (the products are
locked by core.lock_order_products).';

create or replace function core.take_stock(order_id bigint, customer_id bigint, product_ids bigint[], quantities integer[])
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into core.inventory_movements (product_id, delta, reason, order_id, actor_user_id)
  select u.product_id, -u.quantity, 'order', take_stock.order_id, take_stock.customer_id
  from unnest(take_stock.product_ids, take_stock.quantities) as u (product_id, quantity)
  order by u.product_id;
end;
$$;

comment on function core.take_stock(bigint, bigint, bigint[], integer[]) is
'Takes the units of a new order from stock: one ledger row per product (reason order), in product id order.';

commit;
