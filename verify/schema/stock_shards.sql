-- Verify commercecore:schema/stock_shards on pg
begin;

select product_id, shard, units from core.stock_shards where false;
select stock_shards from core.products where false;
select shard from core.inventory_movements where false;

-- units move into shards through the ledger, one statement at a time; the total stays the ledger's sum
insert into core.products (sku, name, price_minor) values ('VERIFY-SHARDS', 'verify', 100);
insert into core.stock_shards (product_id, shard)
select p.id as product_id, g.shard from core.products as p
cross join generate_series(1, 2) as g (shard)
where p.sku = 'VERIFY-SHARDS';
insert into core.inventory_movements (product_id, delta, reason)
select p.id as product_id, 5 as delta, 'restock' as reason from core.products as p where p.sku = 'VERIFY-SHARDS';
insert into core.inventory_movements (product_id, shard, delta, reason)
select p.id as product_id, v.shard, v.delta, 'rebalance' as reason
from core.products as p
cross join (values (null::smallint, -5), (1::smallint, 3), (2::smallint, 2)) as v (shard, delta)
where p.sku = 'VERIFY-SHARDS';
select 1 / (p.stock = 0 and s.units = 5)::int
from core.products as p
cross join lateral (select sum(x.units) as units from core.stock_shards as x where x.product_id = p.id) as s
where p.sku = 'VERIFY-SHARDS';

-- a direct write of a shard's units is refused
do $$
begin
  update core.stock_shards set units = 9 where shard = 1;
  raise exception 'a shard was written directly';
exception when check_violation then
  null;
end;
$$;

rollback;
