-- Revert commercecore:schema/updated_at from pg
begin;

drop function core.set_updated_at();

commit;
