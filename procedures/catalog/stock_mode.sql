-- Deploy commercecore:procedures/catalog/stock_mode to pg
-- requires: procedures/catalog/shards
-- Staff turn a product's flash-sale mode on or off, or change its number of shards: the units move from
-- where they are to where they go through the ledger (reason rebalance), so the total never changes. Lock
-- order, as for every stock function: the product row (the caller's), then the shards in shard order.
begin;

set local role app_owner;

create or replace function core.set_stock_shards(product_id bigint, shards integer, actor_user_id bigint)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  product core.products;
  in_shards bigint;
  total bigint;
begin
  -- the caller holds the product row (FOR NO KEY UPDATE); then every shard, in order
  select coalesce(sum(l.units), 0) into in_shards
  from (
    select s.units from core.stock_shards as s where s.product_id = set_stock_shards.product_id
    order by s.shard for update
  ) as l;
  select p.* into product from core.products as p where p.id = set_stock_shards.product_id;
  if product.stock_shards = set_stock_shards.shards then
    return;
  end if;
  total := product.stock + in_shards;
  if set_stock_shards.shards = 1 then
    update core.products as p set stock_shards = 1 where p.id = product.id;
  end if;
  insert into core.stock_shards (product_id, shard)
  select product.id, g.shard::smallint
  from generate_series(1, set_stock_shards.shards) as g (shard)
  where set_stock_shards.shards > 1
  on conflict do nothing;
  -- one ledger statement moves the units from where they are to where they go: the product row when the
  -- mode is off, else shares of the total (the remainder to the first shards)
  insert into core.inventory_movements (product_id, shard, delta, reason, actor_user_id, note)
  select product.id, m.shard, m.delta, 'rebalance', set_stock_shards.actor_user_id,
    format('stock_shards %s -> %s', product.stock_shards, set_stock_shards.shards)
  from (
    select null::smallint as shard, (case when set_stock_shards.shards = 1 then total else 0 end - product.stock)::integer as delta
    union all
    select
      s.shard,
      (case
        when s.shard > set_stock_shards.shards or set_stock_shards.shards = 1 then 0
        else total / set_stock_shards.shards + case when s.shard <= total % set_stock_shards.shards then 1 else 0 end
      end - s.units)::integer
    from core.stock_shards as s
    where s.product_id = product.id
  ) as m
  where m.delta <> 0
  order by m.shard nulls first;
  delete from core.stock_shards as s
  where s.product_id = product.id and (s.shard > set_stock_shards.shards or set_stock_shards.shards = 1);
  if set_stock_shards.shards > 1 then
    update core.products as p set stock_shards = set_stock_shards.shards where p.id = product.id;
  end if;
end;
$$;

comment on function core.set_stock_shards(bigint, integer, bigint) is
'Puts a product''s stock into shards shards (1: out of flash-sale mode, back into products.stock), through
ledger movements of reason rebalance (its total stays the same), and sets products.stock_shards. The caller
has checked shards and holds the product row; the shards are locked here, in order.';

commit;
