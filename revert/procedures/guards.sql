-- Revert commercecore:procedures/guards from pg
begin;

drop function core.require_staff(text, text);
drop function core.require_customer();
drop function core.signed_in_user(boolean);
drop function core.require_signed_in();
drop function core.raise_not_signed_in(text);

commit;
