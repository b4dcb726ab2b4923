-- Revert commercecore:schema/users from pg
begin;

drop table core.addresses;
drop table core.users;

commit;
