-- Revert commercecore:procedures/ops/housekeeping from pg
begin;

drop function auth.purge_totals();
drop function ops.purge_batch(text, integer);

commit;
