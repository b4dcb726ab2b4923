-- Deploy commercecore:procedures/catalog/products to pg
-- requires: procedures/catalog/reads
-- requires: procedures/guards
-- requires: procedures/catalog/stock_mode
-- Staff's catalog maintenance: create and change products, their fields checked in one place, and turn a
-- product's flash-sale mode on or off (stock_shards, core.set_stock_shards).
begin;

set local role app_owner;

-- update_product takes stock_shards: a new signature, granted again below; its callers name the arguments
-- (the route binds them by name), so none breaks
-- squawk-ignore ban-drop-function
drop function api.update_product(bigint, text, text, text, bigint, text, bigint, boolean, bigint, integer, text[]);

create or replace function core.check_product_fields(
  sku text, name text, description text, price_minor bigint, currency text, category_id bigint,
  cost_minor bigint, max_per_customer integer default null
)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  max_price constant bigint := 1000000000000;
  bad text;
  complaint text;
begin
  -- the first field that is wrong, in argument order; null means "not given" and is checked by the callers
  if check_product_fields.sku !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' then
    bad := 'sku';
    complaint := 'sku must be 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit.';
  elsif length(check_product_fields.name) not between 1 and 200 then
    bad := 'name';
    complaint := 'name must be 1 to 200 characters.';
  elsif length(check_product_fields.description) > 5000 then
    bad := 'description';
    complaint := 'description must be at most 5000 characters.';
  elsif check_product_fields.price_minor not between 0 and max_price then
    bad := 'price_minor';
    complaint := format('price_minor must be between 0 and %s (minor units).', max_price);
  elsif check_product_fields.currency !~ '^[A-Z]{3}$' then
    bad := 'currency';
    complaint := 'currency must be an ISO 4217 code in upper case, such as EUR.';
  elsif check_product_fields.cost_minor not between 0 and max_price then
    bad := 'cost_minor';
    complaint := format('cost_minor must be between 0 and %s (minor units).', max_price);
  elsif check_product_fields.max_per_customer < 1 then
    bad := 'max_per_customer';
    complaint := 'max_per_customer must be at least 1 (units per customer); unset it for the shop''s default.';
  elsif check_product_fields.category_id is not null
    and not exists (select from core.categories as c where c.id = check_product_fields.category_id) then
    bad := 'category_id';
    complaint := 'There is no category with this id.';
  end if;
  if bad is not null then
    perform core.raise_invalid(bad, complaint, hint => 'Correct the field and send the request again.');
  end if;
end;
$$;

comment on function core.check_product_fields(text, text, text, bigint, text, bigint, bigint, integer) is
'Raises PT422 invalid_input naming the first invalid product field among those given (nulls are skipped).';

create or replace function api.create_product(
  sku text,
  name text,
  price_minor bigint,
  currency text default 'EUR',
  description text default '',
  category_id bigint default null,
  stock integer default 0,
  active boolean default true,
  cost_minor bigint default null,
  max_per_customer integer default null
)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  new_id bigint;
  missing text;
begin
  perform core.require_staff();
  missing := case
    when create_product.sku is null then 'sku'
    when create_product.name is null then 'name'
    when create_product.price_minor is null then 'price_minor'
    when create_product.currency is null then 'currency'
    when create_product.stock is null then 'stock'
    when create_product.active is null then 'active'
  end;
  if missing is not null then
    perform core.raise_invalid(missing, format('%s is required.', missing), hint => 'Send the field with a value.');
  end if;
  perform core.check_product_fields(
    create_product.sku, create_product.name, create_product.description, create_product.price_minor,
    create_product.currency, create_product.category_id, create_product.cost_minor,
    create_product.max_per_customer
  );
  if create_product.stock < 0 then
    perform core.raise_invalid(
      'stock', 'stock must not be negative.',
      jsonb_build_object('min', 0), 'Give the units on hand, zero or more.'
    );
  end if;

  begin
    insert into core.products (
      sku, name, description, price_minor, currency, category_id, active, cost_minor, max_per_customer
    )
    values (
      create_product.sku, create_product.name, coalesce(create_product.description, ''),
      create_product.price_minor, create_product.currency, create_product.category_id, create_product.active,
      create_product.cost_minor, create_product.max_per_customer
    )
    returning core.products.id into new_id;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'duplicate_sku', 'Another product already has this sku.',
      jsonb_build_object('field', 'sku', 'sku', create_product.sku),
      'Choose another sku, or change the existing product with PATCH /products/{id}.'
    );
  end;

  -- the initial stock is the product's first ledger row
  if create_product.stock > 0 then
    insert into core.inventory_movements (product_id, delta, reason, actor_user_id, note)
    values (new_id, create_product.stock, 'restock', core.current_user_id(), 'initial stock');
  end if;

  perform set_config('response.status', '201', true);
  perform set_config(
    'response.headers', jsonb_build_array(jsonb_build_object('Location', '/products/' || new_id))::text, true
  );
  return core.product_json(new_id, true);
end;
$$;

comment on function api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer) is
'Staff: adds a product to the catalog and returns it (201, Location /products/{id}), with active and
cost_minor. sku is unique (1-64 of letters, digits, `.`, `_`, `-`); price_minor and cost_minor are minor
units; currency an upper-case ISO 4217 code. A positive stock is recorded as the product''s first ledger
movement (reason restock). max_per_customer: at most this many units in one customer''s unpaid orders
together (at least 1); without it the shop''s default (COMMERCECORE_MAX_UNITS_PER_PRODUCT) applies.
Errors: 403 forbidden; 409 duplicate_sku; 422 invalid_input naming the field.
@route POST /products';

grant execute on function api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer)
to app_admin;

create or replace function api.update_product(
  id bigint,
  sku text default null,
  name text default null,
  description text default null,
  price_minor bigint default null,
  currency text default null,
  category_id bigint default null,
  active boolean default null,
  cost_minor bigint default null,
  max_per_customer integer default null,
  unset text[] default null,
  stock_shards integer default null
)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  unknown text;
  max_shards integer := core.max_stock_shards();
begin
  perform core.require_staff();
  select u.field into unknown
  from unnest(update_product.unset) as u (field)
  where u.field is null or u.field not in ('category_id', 'cost_minor', 'max_per_customer')
  limit 1;
  if found then
    perform core.raise_invalid(
      'unset', 'unset may only name category_id, cost_minor and max_per_customer.',
      jsonb_build_object('value', unknown), 'The other fields cannot be null; give them a value instead.'
    );
  end if;
  if (update_product.category_id is not null and 'category_id' = any(update_product.unset))
    or (update_product.cost_minor is not null and 'cost_minor' = any(update_product.unset))
    or (update_product.max_per_customer is not null and 'max_per_customer' = any(update_product.unset)) then
    perform core.raise_invalid(
      'unset', 'A field cannot be both given and unset.',
      hint => 'Either give the field a value or name it in unset.'
    );
  end if;
  perform core.check_product_fields(
    update_product.sku, update_product.name, update_product.description, update_product.price_minor,
    update_product.currency, update_product.category_id, update_product.cost_minor,
    update_product.max_per_customer
  );

  if update_product.stock_shards not between 1 and max_shards then
    perform core.raise_invalid(
      'stock_shards', format('stock_shards must be a whole number from 1 (flash-sale mode off) to %s.', max_shards),
      jsonb_build_object('min', 1, 'max', max_shards, 'value', update_product.stock_shards),
      'More shards let more buyers take units at once; 1 keeps the stock in the product row.'
    );
  end if;

  -- the lock of the order functions (FOR NO KEY UPDATE, taken by orders of a product not in flash-sale
  -- mode); a flash sale's buyers hold its shards, which core.set_stock_shards waits for, in order, before
  -- the row is changed
  perform from core.products as p where p.id = update_product.id for no key update;
  if not found then
    perform core.raise_not_found('product', update_product.id, 'List the catalog with GET /products.');
  end if;
  if update_product.stock_shards is not null then
    perform core.set_stock_shards(update_product.id, update_product.stock_shards, core.current_user_id());
  end if;

  begin
    update core.products as p set
      sku = coalesce(update_product.sku, p.sku),
      name = coalesce(update_product.name, p.name),
      description = coalesce(update_product.description, p.description),
      price_minor = coalesce(update_product.price_minor, p.price_minor),
      currency = coalesce(update_product.currency, p.currency),
      category_id = case
        when 'category_id' = any(update_product.unset) then null
        else coalesce(update_product.category_id, p.category_id)
      end,
      active = coalesce(update_product.active, p.active),
      cost_minor = case
        when 'cost_minor' = any(update_product.unset) then null
        else coalesce(update_product.cost_minor, p.cost_minor)
      end,
      max_per_customer = case
        when 'max_per_customer' = any(update_product.unset) then null
        else coalesce(update_product.max_per_customer, p.max_per_customer)
      end
    where p.id = update_product.id;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'duplicate_sku', 'Another product already has this sku.',
      jsonb_build_object('field', 'sku', 'sku', update_product.sku), 'Choose another sku.'
    );
  end;
  return core.product_json(update_product.id, true);
end;
$$;

comment on function api.update_product(
  bigint, text, text, text, bigint, text, bigint, boolean, bigint, integer, text[], integer
) is
'Staff: changes the given fields of a product and returns it; fields left out (or null) keep their value.
To clear category_id, cost_minor or max_per_customer, name them in unset (e.g. {"unset": ["category_id"]}).
max_per_customer (at least 1) caps the units of the product in one customer''s unpaid orders together;
unset, the shop''s default (COMMERCECORE_MAX_UNITS_PER_PRODUCT) applies. A lower cap refuses new units only:
orders already placed keep theirs. Stock is not a field here: move it with POST /products/{id}/stock.
Changing the price does not touch the prices already in orders.
stock_shards turns flash-sale mode on (2 up to commercecore.max_stock_shards, default 64) or off (1): the
units on hand are then kept in that many shards, so that concurrent buyers take them without waiting for
each other; the stock shown stays the total. Changing it moves the units through the ledger (reason
rebalance).
Errors: 403 forbidden; 404 not_found; 409 duplicate_sku; 422 invalid_input naming the field (stock_shards
with {min, max, value}).
@route PATCH /products/{id}';

grant execute on function api.update_product(bigint, text, text, text, bigint, text, bigint, boolean, bigint, integer, text[], integer)
to app_admin;

commit;
