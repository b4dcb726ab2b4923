-- Verify commercecore:procedures/auth on pg
begin;

select 1 / has_function_privilege('authenticator', 'auth.register_user(text, text, text)', 'execute')::int;
select 1 / has_function_privilege('authenticator', 'auth.session_active(uuid, bigint, text)', 'execute')::int;
select 1 / has_function_privilege('authenticator', 'auth.login_delay(text, inet)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'auth.login_lookup(text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_admin', 'auth.user_claims(bigint)', 'execute'))::int;
select 1 / has_function_privilege('authenticator', 'auth.upgrade_password_hash(bigint, text, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'auth.upgrade_password_hash(bigint, text, text)', 'execute'))::int;
select 1 / has_function_privilege('app_admin', 'api.set_user_role(bigint, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.set_user_role(bigint, text)', 'execute'))::int;

-- signup, login lookup, a session that is active until revoked and only with the role it was issued with
select auth.register_user(
  ' Verify-Auth@Example.com ', 'Verify', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'
);
select 1 / count(*)::int from auth.login_lookup('verify-auth@example.com');
select auth.create_session(user_id, '00000000-0000-4000-8000-00000000c0de', now() + interval '1 hour')
from auth.login_lookup('verify-auth@example.com');
select 1 / auth.session_active('00000000-0000-4000-8000-00000000c0de', user_id, 'app_readwrite')::int
from auth.login_lookup('verify-auth@example.com');
select 1 / (not auth.session_active('00000000-0000-4000-8000-00000000c0de', user_id, 'app_admin'))::int
from auth.login_lookup('verify-auth@example.com');
select 1 / auth.revoke_session('00000000-0000-4000-8000-00000000c0de')::int;
select 1 / (not auth.session_active('00000000-0000-4000-8000-00000000c0de', user_id, 'app_readwrite'))::int
from auth.login_lookup('verify-auth@example.com');
select 1 / (auth.user_claims(user_id) ->> 'role' = 'app_readwrite')::int
from auth.login_lookup('verify-auth@example.com');

-- failures of one client: free, then a delay for that client only
select auth.record_login_failure('verify-auth@example.com', '192.0.2.1', free_attempts => 1);
select 1 / count(*)::int from auth.login_delay('verify-auth@example.com', '192.0.2.1') where retry_at > now();
select 1 / (count(*) = 0)::int from auth.login_delay('verify-auth@example.com', '192.0.2.2');

rollback;
