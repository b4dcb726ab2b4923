-- Revert commercecore:schema/stock_shards_checks from pg
-- A validated check cannot be made not valid again, and needs not be: reverting schema/stock_shards drops
-- the checks. Nothing to undo here.
begin;

select 1;

commit;
