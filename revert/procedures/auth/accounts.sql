-- Revert commercecore:procedures/auth/accounts from pg
begin;

drop function api.set_user_role(bigint, text);
drop function auth.upgrade_password_hash(bigint, text, text);
drop function auth.change_password(bigint, text);
drop function auth.register_user(text, text, text);

commit;
