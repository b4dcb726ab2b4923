-- Deploy commercecore:procedures/ops/reports to pg
-- requires: views/sales_daily
-- Refreshing the reports: ops.sales_daily concurrently, so that its readers are never blocked.
begin;

-- REFRESH MATERIALIZED VIEW CONCURRENTLY diffs through temporary tables, created as the view's owner;
-- PUBLIC has no TEMP on this database (roles/base), so the owner gets it here
do $$
begin
  execute pg_catalog.format('grant temporary on database %I to app_owner', current_database());
end;
$$;

set local role app_owner;

create or replace function ops.refresh_sales_daily() returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- concurrently: readers of the report are never blocked by a refresh
  refresh materialized view concurrently ops.sales_daily;
end;
$$;

comment on function ops.refresh_sales_daily() is
'Refreshes ops.sales_daily concurrently (readers keep reading the previous contents meanwhile).';

grant execute on function ops.refresh_sales_daily() to app_dba;

commit;
