-- Revert commercecore:schema/users_disabled from pg
begin;

alter table core.users drop column disabled_at;

commit;
