-- Revert commercecore:procedures/ops from pg
begin;

drop function ops.table_bloat(text);
drop function ops.table_bloat(regclass);
drop view ops.cache_hit_ratio;
drop view ops.index_usage;
drop view ops.top_queries;
drop function ops.refresh_sales_daily();
drop materialized view ops.sales_daily;
drop function ops.expire_unpaid_orders(interval, interval);


do $$
begin
  execute pg_catalog.format('revoke temporary on database %I from app_owner', current_database());
end;
$$;

commit;
