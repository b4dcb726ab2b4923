-- Revert commercecore:schema/login_failures from pg
begin;

drop table auth.login_failures;

commit;
