-- Deploy commercecore:schema/users_disabled to pg
-- requires: schema/users
-- A disabled account: staff or customer, it keeps its rows (orders, audit trail) but signs in no more.
-- `commercecore users disable` sets it and revokes the account's sessions in the same transaction. A
-- nullable column without a default is added without rewriting the table.
begin;

set local role app_owner;

alter table core.users add column disabled_at timestamptz;

comment on column core.users.disabled_at is
'When the account was disabled (commercecore users disable); null for an active account. A disabled account
is not found at login and no session opens for it.';

commit;
