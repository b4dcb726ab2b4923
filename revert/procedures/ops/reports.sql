-- Revert commercecore:procedures/ops/reports from pg
begin;

drop function ops.refresh_sales_daily();

do $$
begin
  execute pg_catalog.format('revoke temporary on database %I from app_owner', current_database());
end;
$$;

commit;
