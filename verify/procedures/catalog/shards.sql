-- Verify commercecore:procedures/catalog/shards on pg
begin;

insert into core.products (sku, name, price_minor) values ('VERIFY-FLASH', 'flash', 100);
select set_config('verify.product', id::text, true) from core.products where sku = 'VERIFY-FLASH';
insert into core.inventory_movements (product_id, delta, reason)
values (current_setting('verify.product')::bigint, 10, 'restock');

-- two shards of 4 and 6 units (moved by the ledger, as staff's split would): orders take from them
insert into core.stock_shards (product_id, shard)
values (current_setting('verify.product')::bigint, 1), (current_setting('verify.product')::bigint, 2);
insert into core.inventory_movements (product_id, shard, delta, reason)
values
(current_setting('verify.product')::bigint, null, -10, 'rebalance'),
(current_setting('verify.product')::bigint, 1, 4, 'rebalance'),
(current_setting('verify.product')::bigint, 2, 6, 'rebalance');
select 1 / (sum(units) = 7)::int
from core.take_shard_units(current_setting('verify.product')::bigint, 2, 7);
select 1 / (core.return_shard(current_setting('verify.product')::bigint) between 1 and 2)::int;
select 1 / (sum(units) = 3)::int from core.spread_shard_units(current_setting('verify.product')::bigint, 3);
select 1 / (core.max_stock_shards() >= 1)::int;

rollback;
