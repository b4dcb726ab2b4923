-- Revert commercecore:procedures/catalog/stock_mode from pg
begin;

drop function core.set_stock_shards(bigint, integer, bigint);

commit;
