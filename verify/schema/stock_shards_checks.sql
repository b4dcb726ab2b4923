-- Verify commercecore:schema/stock_shards_checks on pg
-- Every check of the flash-sale shards is validated.
begin;

select 1 / (count(*) = 4)::integer
from pg_catalog.pg_constraint
where
  conname in (
    'products_stock_shards_check', 'products_sharded_stock_check',
    'inventory_movements_shard_check', 'inventory_movements_reason_check'
  )
  and convalidated;

rollback;
