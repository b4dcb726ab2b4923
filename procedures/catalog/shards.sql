-- Deploy commercecore:procedures/catalog/shards to pg
-- requires: schema/stock_shards
-- requires: procedures/orders/common
-- Flash-sale mode (schema/stock_shards): which shards an order takes its units from, which shard gets units
-- back, how staff's adjustments spread over them (turning the mode on and off: procedures/catalog/stock_mode).
-- Lock order, for every function here: the product rows first (in id order), then the shards, by
-- product id and shard number. A buyer locks a free shard without waiting (FOR UPDATE SKIP LOCKED); only
-- when the free shards cannot serve the order does it wait, for all the product's shards in order, having
-- let go of the free ones first (a subtransaction rolled back), so no wait is ever out of order.
begin;

set local role app_owner;

create or replace function core.max_stock_shards() returns integer
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(current_setting('commercecore.max_stock_shards', true), '')::integer, 64)
$$;

comment on function core.max_stock_shards() is
'The largest stock_shards staff may give a product: the setting commercecore.max_stock_shards (set it for
the database or a role, e.g. alter database ... set commercecore.max_stock_shards = 16), else 64.';

create or replace function core.stock_mode_changed(product_id bigint)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'the flash-sale mode of product % changed while the request ran', stock_mode_changed.product_id
  using errcode = '40001', hint = 'Send the request again.';
end;
$$;

comment on function core.stock_mode_changed(bigint) is
'Raises 40001 (serialization failure, retried by the gateway): staff turned a product''s flash-sale mode on
or off between the request''s first look at it and its locks.';

create or replace function core.take_shard_units(product_id bigint, shards integer, quantity integer)
returns table (shard smallint, units integer)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  -- each connection starts at a shard of its own, so concurrent buyers seldom try the same one
  home integer := pg_backend_pid() % take_shard_units.shards;
  found_shard record;
  picked smallint[] := '{}';
  taken integer[] := '{}';
  needed integer := take_shard_units.quantity;
  holding boolean := false;
  available bigint;
begin
  -- one free shard that held the units when this statement began: the common case of a flash sale. Locked
  -- in the transaction itself: a lock taken in a subtransaction would make the shard's update a multixact
  -- that every other buyer's SKIP LOCKED then reads. The candidates are computed once, so no row is locked
  -- and then passed over.
  select s.shard, s.units into found_shard
  from core.stock_shards as s
  where
    s.product_id = take_shard_units.product_id
    and s.shard = any(array(
      select c.shard from core.stock_shards as c
      where c.product_id = take_shard_units.product_id and c.units >= take_shard_units.quantity
    ))
  order by (s.shard + home) % take_shard_units.shards
  limit 1
  for update skip locked;
  if found and found_shard.units >= take_shard_units.quantity then
    return query select found_shard.shard, take_shard_units.quantity;
    return;
  elsif found then
    -- another buyer took from it meanwhile: its units, then free shards; this lock is out of shard order,
    -- so the order cannot wait for the other shards
    holding := true;
    picked := array[found_shard.shard];
    taken := array[found_shard.units];
    needed := take_shard_units.quantity - found_shard.units;
  end if;
  begin
    -- free shards one after the other, each giving what it has
    loop
      select s.shard, s.units into found_shard
      from core.stock_shards as s
      where s.product_id = take_shard_units.product_id and s.units > 0 and s.shard <> all(picked)
      order by (s.shard + home) % take_shard_units.shards
      limit 1
      for update skip locked;
      exit when not found;
      picked := picked || found_shard.shard;
      taken := taken || least(found_shard.units, needed);
      needed := needed - least(found_shard.units, needed);
      exit when needed = 0;
    end loop;
    if needed > 0 then
      -- a signal to the handler below, never seen outside this function
      raise exception using errcode = 'P0004', message = 'the free shards are short';
    end if;
  exception when assert_failure then
    -- the free shards' locks go with the subtransaction: the wait below is in shard order
    picked := null;
  end;
  if picked is not null then
    return query select p.shard, p.units from unnest(picked, taken) as p (shard, units) where p.units > 0;
    return;
  end if;
  if holding then
    raise exception 'the flash-sale shards of product % were taken from while the order was placed',
    take_shard_units.product_id
    using errcode = '40001', hint = 'Send the request again.';
  end if;

  -- the units left are spread too thin (or every shard is busy): all the shards, in order
  select coalesce(sum(l.units), 0) into available
  from (
    select s.units from core.stock_shards as s
    where s.product_id = take_shard_units.product_id
    order by s.shard
    for update
  ) as l;
  if not exists (
    select from core.products as p where p.id = take_shard_units.product_id and p.stock_shards > 1
  ) then
    perform core.stock_mode_changed(take_shard_units.product_id);
  end if;
  if available < take_shard_units.quantity then
    perform core.raise_insufficient_stock(take_shard_units.product_id, take_shard_units.quantity, available::integer);
  end if;
  return query
  select t.shard, t.units
  from (
    select
      s.shard,
      least(
        s.units,
        take_shard_units.quantity
        - coalesce(sum(s.units) over (order by s.shard rows between unbounded preceding and 1 preceding), 0)
      )::integer as units
    from core.stock_shards as s
    where s.product_id = take_shard_units.product_id
  ) as t
  where t.units > 0;
end;
$$;

comment on function core.take_shard_units(bigint, integer, integer) is
'Locks the shards a flash-sale product''s order takes quantity units from and returns (shard, units): one
free shard with enough units (FOR UPDATE SKIP LOCKED, each connection starting at its own shard), else
several free ones, else, having released those, all the shards in shard order. PT409 insufficient_stock only
when all the shards together are short. 40001 (retried by the gateway) when the product left flash-sale mode
meanwhile, or when the shard it first locked was emptied by another buyer and the free ones cannot make up
the rest (it may not wait for the others while it holds that one out of order).';

create or replace function core.return_shard(product_id bigint)
returns smallint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  chosen smallint;
begin
  -- the emptiest free shard; when all are busy, the first one (the lowest, so the wait is in order)
  select s.shard into chosen
  from core.stock_shards as s
  where s.product_id = return_shard.product_id
  order by s.units, s.shard
  limit 1
  for update skip locked;
  if not found then
    select s.shard into chosen
    from core.stock_shards as s
    where s.product_id = return_shard.product_id
    order by s.shard
    limit 1
    for update;
  end if;
  if chosen is null then
    perform core.stock_mode_changed(return_shard.product_id);
  end if;
  return chosen;
end;
$$;

comment on function core.return_shard(bigint) is
'Locks and returns the shard of a flash-sale product that units given back go to: the emptiest free one,
else the first; 40001 when the product has no shards (it left flash-sale mode meanwhile).';

create or replace function core.spread_shard_units(product_id bigint, delta integer)
returns table (shard smallint, units integer)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  counted integer;
  available bigint;
begin
  -- staff's moves lock every shard, in order: units added are shared out evenly (the remainder to the
  -- emptiest shards), units taken come from the fullest shards first
  select count(*), coalesce(sum(l.units), 0) into counted, available
  from (
    select s.units from core.stock_shards as s where s.product_id = spread_shard_units.product_id
    order by s.shard for update
  ) as l;
  if counted = 0 then
    perform core.stock_mode_changed(spread_shard_units.product_id);
  end if;
  if available + spread_shard_units.delta < 0 then
    perform core.raise_insufficient_stock(
      spread_shard_units.product_id, -spread_shard_units.delta::bigint, available::integer
    );
  end if;
  if spread_shard_units.delta > 0 then
    return query
    select l.shard, l.units
    from (
      select
        s.shard,
        (spread_shard_units.delta / counted
        + case when row_number() over (order by s.units, s.shard) <= spread_shard_units.delta % counted then 1 else 0 end
        )::integer as units
      from core.stock_shards as s
      where s.product_id = spread_shard_units.product_id
    ) as l
    where l.units > 0;
  else
    return query
    select l.shard, -l.units
    from (
      select
        s.shard,
        least(
          s.units,
          -spread_shard_units.delta
          - coalesce(sum(s.units) over (order by s.units desc, s.shard rows between unbounded preceding and 1 preceding), 0)
        )::integer as units
      from core.stock_shards as s
      where s.product_id = spread_shard_units.product_id
    ) as l
    where l.units > 0;
  end if;
end;
$$;

comment on function core.spread_shard_units(bigint, integer) is
'Locks all the shards of a flash-sale product (in shard order) and returns how delta moves them (shard,
units): added units shared out evenly, the remainder to the emptiest shards; taken units from the fullest
shards first. PT409 insufficient_stock when delta takes more than the shards hold.';

commit;
