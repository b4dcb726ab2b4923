-- Verify commercecore:procedures/auth/logins on pg
begin;

select 1 / has_function_privilege('authenticator', 'auth.login_lookup(text)', 'execute')::int;
select 1 / has_function_privilege('authenticator', 'auth.login_delay(text, inet)', 'execute')::int;
select 1 / has_function_privilege(
  'authenticator', 'auth.record_login_failure(text, inet, integer, interval, interval)', 'execute'
)::int;
select 1 / has_function_privilege('authenticator', 'auth.record_login_success(bigint, inet)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'auth.login_lookup(text)', 'execute'))::int;

-- the look-up finds an account by its trimmed, lower-cased address
insert into core.users (email) values ('verify-logins@example.com');
insert into auth.credentials (user_id, password_hash)
select id as user_id, '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA' as password_hash
from core.users where email = 'verify-logins@example.com';
select 1 / count(*)::int from auth.login_lookup(' Verify-Logins@Example.com ');

-- failures of one client: free, then a delay for that client only, forgotten at its success
select auth.record_login_failure('verify-logins@example.com', '192.0.2.1', free_attempts => 1);
select 1 / count(*)::int from auth.login_delay('verify-logins@example.com', '192.0.2.1') where retry_at > now();
select 1 / (count(*) = 0)::int from auth.login_delay('verify-logins@example.com', '192.0.2.2');
select auth.record_login_success(id, '192.0.2.1') from core.users where email = 'verify-logins@example.com';
select 1 / (count(*) = 0)::int from auth.login_delay('verify-logins@example.com', '192.0.2.1');

-- a disabled account is not found
update core.users set disabled_at = now() where email = 'verify-logins@example.com';
select 1 / (count(*) = 0)::int from auth.login_lookup('verify-logins@example.com');

rollback;
