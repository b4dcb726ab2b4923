-- Revert commercecore:procedures/catalog/shards from pg
begin;

drop function core.spread_shard_units(bigint, integer);
drop function core.return_shard(bigint);
drop function core.take_shard_units(bigint, integer, integer);
drop function core.stock_mode_changed(bigint);
drop function core.max_stock_shards();

commit;
