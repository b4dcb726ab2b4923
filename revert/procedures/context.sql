-- Revert commercecore:procedures/context from pg
begin;

drop function core.request_id();
drop function core.is_service();
drop function core.is_admin();
drop function core.request_role();
drop function core.current_user_id();

commit;
