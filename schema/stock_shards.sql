-- Deploy commercecore:schema/stock_shards to pg
-- requires: schema/catalog
-- requires: schema/orders
-- requires: schema/audit
-- Flash-sale stock, and the ledger applied a statement at a time. A product with stock_shards = n > 1 keeps
-- its units in n rows of core.stock_shards instead of products.stock (then 0), so that buyers each lock
-- one shard (FOR UPDATE SKIP LOCKED) instead of queueing on the product row. Stock still moves only through
-- the ledger: a movement names the shard it moves (shard null: the product row), and one statement-level
-- trigger applies every movement of an INSERT, so products.stock plus the product's shards always equal
-- its ledger sum. Direct writes of products.stock or stock_shards.units are refused; the guards and the
-- other row triggers of core.products have WHEN conditions, so a stock move calls no PL/pgSQL row trigger.
-- squawk: a shard number is at most 64 (commercecore.max_stock_shards), so smallint; the ledger's reason
-- check is dropped only to be replaced by a wider one, and the row trigger's function by a statement-level
-- one, in this same transaction
-- squawk-ignore-file prefer-bigint-over-smallint,ban-drop-constraint,ban-drop-function
begin;

set local role app_owner;

-- the checks are added not valid (no scan under this change's lock; the column's constant default rewrites
-- nothing) and validated by the next change, schema/stock_shards_checks, in a transaction of its own
alter table core.products
add column stock_shards integer not null default 1,
add constraint products_stock_shards_check check (stock_shards >= 1) not valid,
add constraint products_sharded_stock_check check (stock_shards = 1 or stock = 0) not valid;

comment on column core.products.stock_shards is
'Flash-sale mode: 1 (off), or the number of rows of core.stock_shards that hold the product''s units, so
that concurrent buyers take them from different rows. stock is then 0: the units on hand are the sum of the
shards (what the catalog and the orders show as stock).';

create table core.stock_shards (
  product_id bigint not null,
  shard smallint not null,
  units integer not null default 0,
  constraint stock_shards_pkey primary key (product_id, shard),
  constraint stock_shards_product_id_fkey foreign key (product_id) references core.products (id) on delete restrict,
  constraint stock_shards_shard_check check (shard >= 1),
  constraint stock_shards_units_check check (units >= 0)
)
-- a shard is updated by every order that takes from it: room on its page keeps those updates HOT
with (fillfactor = 50);

comment on table core.stock_shards is
'The units of a product in flash-sale mode (core.products.stock_shards > 1), one row per shard. units is
maintained by the inventory ledger, never written directly.';
comment on column core.stock_shards.units is 'Units on hand in this shard: the sum of the ledger movements of the shard.';

-- the ledger is the largest table: its checks are added not valid and validated by the next change. The
-- reason check is replaced by a wider one ('rebalance') in this transaction.
alter table core.inventory_movements
add column shard smallint,
add constraint inventory_movements_shard_check check (shard >= 1) not valid,
drop constraint inventory_movements_reason_check,
add constraint inventory_movements_reason_check check (
  reason in (
    'restock', 'adjustment', 'order', 'order_change', 'order_cancel', 'order_expired', 'correction', 'rebalance'
  )
) not valid;

comment on column core.inventory_movements.shard is
'The flash-sale shard the movement applies to (core.stock_shards); null: the product row''s stock.';

drop trigger inventory_movements_apply on core.inventory_movements;
-- the row trigger's function, replaced by the statement-level one below (no client calls a trigger function)
drop function core.apply_inventory_movement();

create function core.apply_inventory_movements() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  missing integer;
begin
  -- one statement for the whole INSERT: the net move of each product row and of each shard; the check
  -- constraints refuse a negative result, and callers lock the rows first (in the lock order of the order
  -- functions) so that they see the stock they are about to change
  with moves as (
    select m.product_id, m.shard, sum(m.delta)::integer as delta
    from moved as m
    group by m.product_id, m.shard
  ),

  product_rows as (
    update core.products as p set stock = p.stock + v.delta
    from moves as v
    where v.shard is null and p.id = v.product_id and v.delta <> 0
    returning p.id
  ),

  shard_rows as (
    update core.stock_shards as s set units = s.units + v.delta
    from moves as v
    where s.product_id = v.product_id and s.shard = v.shard and v.delta <> 0
    returning s.product_id
  )

  -- (a data-modifying WITH runs to completion whether or not its rows are read)
  select
    (select count(*) from moves as v where v.shard is not null and v.delta <> 0)
    - (select count(*) from shard_rows)
  into missing;
  if missing <> 0 then
    raise exception 'a ledger movement names a shard the product does not have'
    using errcode = '23503', hint = 'Move the units of a flash-sale product''s existing shards only.';
  end if;
  return null;
end;
$$;

comment on function core.apply_inventory_movements() is
'Trigger (statement level): applies the ledger rows of an INSERT to products.stock (shard null) and to
core.stock_shards.units, one update per table.';

create trigger inventory_movements_apply after insert on core.inventory_movements
referencing new table as moved
for each statement execute function core.apply_inventory_movements();

create function core.guard_shard_units() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- as products.stock: only the ledger trigger (one level down) moves units; a shard starts and ends empty
  if tg_op = 'INSERT' then
    raise exception 'a new shard starts with zero units; move units into it with a ledger movement'
    using errcode = '23514', constraint = 'stock_shards_units_check';
  elsif tg_op = 'DELETE' then
    raise exception 'a shard that holds units cannot be removed; move its units out with ledger movements first'
    using errcode = '23514', constraint = 'stock_shards_units_check';
  end if;
  raise exception 'core.stock_shards.units changes only through core.inventory_movements'
  using errcode = '23514', constraint = 'stock_shards_units_check';
end;
$$;

comment on function core.guard_shard_units() is
'Trigger: stock_shards.units is written by the ledger trigger alone; shards are created and removed empty.';

create trigger stock_shards_guard_insert before insert on core.stock_shards
for each row when (new.units <> 0) execute function core.guard_shard_units();
create trigger stock_shards_guard_units before update of units on core.stock_shards
for each row when (new.units is distinct from old.units and pg_trigger_depth() < 1)
execute function core.guard_shard_units();
create trigger stock_shards_guard_delete before delete on core.stock_shards
for each row when (old.units <> 0) execute function core.guard_shard_units();

-- the row triggers of core.products, called only when they have something to do: a stock move (the ledger
-- trigger's update) neither stamps updated_at nor writes an audit row (the ledger is its record), and the
-- guard runs for direct writes only
drop trigger products_guard_stock on core.products;
create trigger products_guard_stock before update of stock on core.products
for each row when (new.stock is distinct from old.stock and pg_trigger_depth() < 1)
execute function core.guard_product_stock();
create trigger products_guard_stock_insert before insert on core.products
for each row when (new.stock <> 0) execute function core.guard_product_stock();

drop trigger products_set_updated_at on core.products;
create trigger products_set_updated_at before update on core.products
for each row when (new.stock is not distinct from old.stock)
execute function core.set_updated_at();

drop trigger products_audit on core.products;
create trigger products_audit after insert or delete on core.products
for each row execute function audit.record_change();
create trigger products_audit_update after update on core.products
for each row when (new.stock is not distinct from old.stock)
execute function audit.record_change();

commit;
