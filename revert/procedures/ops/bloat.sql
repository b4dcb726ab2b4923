-- Revert commercecore:procedures/ops/bloat from pg
begin;

drop function ops.table_bloat(text);
drop function ops.table_bloat(regclass);

commit;
