-- Deploy commercecore:schema/stock_shards_checks to pg
-- requires: schema/stock_shards
-- The checks schema/stock_shards added not valid, validated in a transaction of their own: a validation
-- scans its table under SHARE UPDATE EXCLUSIVE, which lets reads and writes (orders, the ledger) go on.
begin;

set local role app_owner;

alter table core.products validate constraint products_stock_shards_check;
alter table core.products validate constraint products_sharded_stock_check;
alter table core.inventory_movements validate constraint inventory_movements_shard_check;
alter table core.inventory_movements validate constraint inventory_movements_reason_check;

commit;
