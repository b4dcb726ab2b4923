-- Verify commercecore:procedures/catalog/stock_mode on pg
begin;

insert into core.products (sku, name, price_minor) values ('VERIFY-FLASH', 'flash', 100);
select set_config('verify.product', id::text, true) from core.products where sku = 'VERIFY-FLASH';
insert into core.inventory_movements (product_id, delta, reason)
values (current_setting('verify.product')::bigint, 10, 'restock');

-- split into 4 shards and back: the total stays 10, the shards hold it while the mode is on
select core.set_stock_shards(current_setting('verify.product')::bigint, 4, null);
select 1 / (count(*) = 4 and sum(units) = 10)::int
from core.stock_shards where product_id = current_setting('verify.product')::bigint;
select 1 / (sum(units) = 3)::int
from core.take_shard_units(current_setting('verify.product')::bigint, 4, 3);
select 1 / (core.return_shard(current_setting('verify.product')::bigint) between 1 and 4)::int;
select core.set_stock_shards(current_setting('verify.product')::bigint, 1, null);
select 1 / (stock = 10 and stock_shards = 1)::int from core.products where id = current_setting('verify.product')::bigint;
select 1 / (count(*) = 0)::int from core.stock_shards where product_id = current_setting('verify.product')::bigint;
select 1 / (core.max_stock_shards() >= 1)::int;

rollback;
