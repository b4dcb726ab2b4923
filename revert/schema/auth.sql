-- Revert commercecore:schema/auth from pg
begin;

drop table auth.sessions;
drop table auth.credentials;

commit;
