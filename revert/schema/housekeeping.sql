-- Revert commercecore:schema/housekeeping from pg
begin;

drop table ops.purged_rows;

commit;
