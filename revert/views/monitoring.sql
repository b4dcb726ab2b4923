-- Revert commercecore:views/monitoring from pg
begin;

drop view ops.cache_hit_ratio;
drop view ops.index_usage;
drop view ops.top_queries;

commit;
