-- Verify commercecore:procedures/auth/accounts on pg
begin;

select 1 / has_function_privilege('authenticator', 'auth.register_user(text, text, text)', 'execute')::int;
select 1 / has_function_privilege('authenticator', 'auth.change_password(bigint, text)', 'execute')::int;
select 1 / has_function_privilege('authenticator', 'auth.upgrade_password_hash(bigint, text, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'auth.upgrade_password_hash(bigint, text, text)', 'execute'))::int;
select 1 / has_function_privilege('app_admin', 'api.set_user_role(bigint, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.set_user_role(bigint, text)', 'execute'))::int;

-- signup makes a customer; a password change ends the user's sessions
select set_config('verify.user', auth.register_user(
  ' Verify-Auth@Example.com ', 'Verify', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'
) ->> 'id', true);
select 1 / (role = 'app_readwrite' and email = 'verify-auth@example.com')::int
from core.users where id = current_setting('verify.user')::bigint;
insert into auth.sessions (jti, user_id, role, expires_at)
values ('00000000-0000-4000-8000-00000000c0df', current_setting('verify.user')::bigint, 'app_readwrite', now() + interval '1 hour');
select
  1 / (auth.change_password(
    current_setting('verify.user')::bigint, '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQy$aGFzaGhhc2hoYXNoaGFzaA'
  ) = 1)::int;

rollback;
