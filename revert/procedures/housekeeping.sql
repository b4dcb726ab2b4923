-- Revert commercecore:procedures/housekeeping from pg
begin;

drop function auth.purge_totals();
drop function ops.purge_batch(text, integer);

commit;
