-- Revert commercecore:views/addresses from pg
begin;

drop view api.addresses;

commit;
