-- Revert commercecore:procedures/ops/accounts from pg
begin;

drop function ops.set_account_disabled(text, boolean);
drop function ops.set_account_role(text, text);
drop function ops.accounts(text);
drop function ops.create_account(text, text, text, text);
drop function ops.locked_account(text);
drop function ops.account_json(core.users);
drop function ops.check_account_role(text);

commit;
