-- Verify commercecore:procedures/ops/accounts on pg
begin;

-- the owner's alone: neither the gateway's login nor a request role may create or change accounts
select 1 / (not has_function_privilege('authenticator', 'ops.create_account(text, text, text, text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_admin', 'ops.create_account(text, text, text, text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_dba', 'ops.set_account_role(text, text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_admin', 'ops.accounts(text)', 'execute'))::int;

-- a staff account is created, listed, made a customer, disabled (its sessions revoked) and enabled again
select ops.create_account(
  ' Verify-Accounts@Example.com ', 'app_admin',
  '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', 'Verify'
);
select 1 / count(*)::int from ops.accounts('app_admin') where email = 'verify-accounts@example.com';
select 1 / (ops.set_account_role('verify-accounts@example.com', 'app_readwrite') ->> 'role' = 'app_readwrite')::int;
select auth.create_session(id, '00000000-0000-4000-8000-00000000acc7', now() + interval '1 hour')
from core.users where email = 'verify-accounts@example.com';
select 1 / ((ops.set_account_disabled('verify-accounts@example.com', true) ->> 'sessions_revoked')::int = 1)::int;
select 1 / (count(*) = 0)::int from auth.login_lookup('verify-accounts@example.com');
select 1 / (ops.set_account_disabled('verify-accounts@example.com', false) ->> 'disabled_at' is null)::int;
select 1 / count(*)::int from auth.login_lookup('verify-accounts@example.com');

rollback;
