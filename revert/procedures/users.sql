-- Revert commercecore:procedures/users from pg
begin;

drop function api.update_me(text, text);
drop function api.me();
drop function core.normalize_email(text);
drop function core.user_json(core.users);

commit;
