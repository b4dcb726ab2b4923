-- Revert commercecore:schema/context from pg
begin;

drop function core.set_updated_at();
drop function core.request_id();
drop function core.is_service();
drop function core.is_admin();
drop function core.request_role();
drop function core.current_user_id();

commit;
