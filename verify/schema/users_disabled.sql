-- Verify commercecore:schema/users_disabled on pg
begin;

select disabled_at from core.users where false;

rollback;
