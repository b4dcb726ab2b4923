-- Deploy commercecore:schema/catalog to pg
-- requires: schema/updated_at
-- Categories, products and the inventory ledger. Stock moves only through the ledger: every change of
-- products.stock is a row of core.inventory_movements, so stock always equals the ledger's sum. The trigger
-- functions that keep it so stay beside their tables. The indexes of core.products serve the filters of the
-- public catalog (views/products) as well as the order functions.
begin;

set local role app_owner;

create table core.categories (
  id bigint generated always as identity,
  slug text not null,
  name text not null,
  description text not null default '',
  parent_id bigint,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint categories_pkey primary key (id),
  constraint categories_slug_key unique (slug),
  constraint categories_parent_id_fkey foreign key (parent_id) references core.categories (id) on delete restrict,
  constraint categories_slug_check check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(slug) <= 80),
  constraint categories_name_check check (length(name) between 1 and 120)
);

comment on table core.categories is 'The catalog''s categories, optionally nested.';
create index categories_parent_id_idx on core.categories (parent_id);

create trigger categories_set_updated_at before update on core.categories
for each row execute function core.set_updated_at();

create table core.products (
  id bigint generated always as identity,
  sku text not null,
  name text not null,
  description text not null default '',
  price_minor bigint not null,
  currency text not null default 'EUR',
  stock integer not null default 0,
  category_id bigint,
  active boolean not null default true,
  cost_minor bigint,
  max_per_customer integer,
  search tsvector generated always as (
    setweight(to_tsvector('english', name), 'A')
    || setweight(to_tsvector('simple', sku), 'A')
    || setweight(to_tsvector('english', description), 'B')
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint products_pkey primary key (id),
  constraint products_sku_key unique (sku),
  constraint products_category_id_fkey foreign key (category_id) references core.categories (id) on delete set null,
  constraint products_sku_check check (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  constraint products_name_check check (length(name) between 1 and 200),
  constraint products_description_check check (length(description) <= 5000),
  constraint products_price_minor_check check (price_minor >= 0),
  constraint products_currency_check check (currency ~ '^[A-Z]{3}$'),
  constraint products_stock_check check (stock >= 0),
  constraint products_cost_minor_check check (cost_minor >= 0),
  constraint products_max_per_customer_check check (max_per_customer > 0)
);

comment on table core.products is 'Products. stock is maintained by the inventory ledger, never written directly.';
comment on column core.products.price_minor is 'Unit price in minor units of currency (cents).';
comment on column core.products.currency is 'ISO 4217 code, upper case.';
comment on column core.products.stock is 'Units on hand: always the sum of this product''s inventory movements.';
comment on column core.products.cost_minor is 'Internal purchase cost; never exposed by the public catalog.';
comment on column core.products.max_per_customer is
'At most this many units of the product in one customer''s unpaid orders together; null: the shop''s
default (commercecore.max_units_per_product).';
comment on column core.products.search is 'Full-text document: name and sku (weight A), description (weight B).';

create index products_category_id_idx on core.products (category_id, id) where active;
create index products_active_id_idx on core.products (id) where active;
create index products_active_price_idx on core.products (price_minor, id) where active;
create index products_search_idx on core.products using gin (search);
-- the other filters of api.products (views/products): a currency (a multi-currency storefront shows one),
-- keyset-paged by id; created_at ranges ("new arrivals"). Neither column changes with stock, so stock moves
-- stay HOT updates.
create index products_active_currency_id_idx on core.products (currency, id) where active;
comment on index core.products_active_currency_id_idx is 'api.products filtered by currency, in id order.';
create index products_active_created_at_idx on core.products (created_at, id) where active;
comment on index core.products_active_created_at_idx is 'api.products filtered by a created_at range.';
-- pattern filters of api.products (its @pattern declaration): the gateway adds the byte range of the
-- pattern's prefix (`name ~>=~ 'Ear' and name ~<~ 'Eas'`), whose leakproof operators reach these indexes
-- through the view's security barrier; byte order, whatever the database's collation
create index products_active_name_pattern_idx on core.products (name text_pattern_ops) where active;
comment on index core.products_active_name_pattern_idx is 'api.products: prefix patterns on name.';
create index products_active_sku_pattern_idx on core.products (sku text_pattern_ops) where active;
comment on index core.products_active_sku_pattern_idx is 'api.products: prefix patterns on sku.';

create trigger products_set_updated_at before update on core.products
for each row execute function core.set_updated_at();

create table core.inventory_movements (
  id bigint generated always as identity,
  product_id bigint not null,
  delta integer not null,
  reason text not null,
  order_id bigint,
  actor_user_id bigint,
  note text not null default '',
  created_at timestamptz not null default now(),
  constraint inventory_movements_pkey primary key (id),
  constraint inventory_movements_product_id_fkey foreign key (product_id)
  references core.products (id) on delete restrict,
  constraint inventory_movements_delta_check check (delta <> 0),
  constraint inventory_movements_reason_check check (
    reason in ('restock', 'adjustment', 'order', 'order_change', 'order_cancel', 'order_expired', 'correction')
  ),
  constraint inventory_movements_note_check check (length(note) <= 500)
);

comment on table core.inventory_movements is
'The inventory ledger: one row per stock change, with its reason and order. Append-only.';
comment on column core.inventory_movements.delta is 'Units added (positive) or taken (negative).';
comment on column core.inventory_movements.order_id is 'The order that caused the movement, for order reasons.';

create index inventory_movements_product_id_idx on core.inventory_movements (product_id, id);
create index inventory_movements_order_id_idx on core.inventory_movements (order_id) where order_id is not null;

create function core.apply_inventory_movement() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- the check constraint products_stock_check refuses a negative result; callers lock the product row
  -- first (in id order) so that they see the stock they are about to change
  update core.products set stock = stock + new.delta where id = new.product_id;
  return null;
end;
$$;

comment on function core.apply_inventory_movement() is 'Trigger: applies a ledger row to products.stock.';

create trigger inventory_movements_apply after insert on core.inventory_movements
for each row execute function core.apply_inventory_movement();

create function core.forbid_ledger_rewrite() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'the inventory ledger is append-only'
  using errcode = 'P0001', hint = 'Record a correcting movement instead.';
end;
$$;

comment on function core.forbid_ledger_rewrite() is 'Trigger: the ledger is append-only (no update, delete or truncate).';

create trigger inventory_movements_append_only before update or delete on core.inventory_movements
for each row execute function core.forbid_ledger_rewrite();
create trigger inventory_movements_no_truncate before truncate on core.inventory_movements
for each statement execute function core.forbid_ledger_rewrite();

create function core.guard_product_stock() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- only the ledger trigger (one level down) may move stock; a direct write would break stock = sum(ledger)
  if tg_op = 'INSERT' and new.stock <> 0 then
    raise exception 'a new product starts with zero stock; add stock with a ledger movement'
    using errcode = '23514', constraint = 'products_stock_check';
  elsif tg_op = 'UPDATE' and new.stock is distinct from old.stock and pg_trigger_depth() < 2 then
    raise exception 'products.stock changes only through core.inventory_movements'
    using errcode = '23514', constraint = 'products_stock_check';
  end if;
  return new;
end;
$$;

comment on function core.guard_product_stock() is 'Trigger: products.stock is written by the ledger trigger alone.';

create trigger products_guard_stock before insert or update of stock on core.products
for each row execute function core.guard_product_stock();

commit;
