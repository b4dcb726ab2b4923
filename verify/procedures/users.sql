-- Verify commercecore:procedures/users on pg
begin;

select 1 / has_function_privilege('app_readwrite', 'api.me()', 'execute')::int;
select 1 / has_function_privilege('app_admin', 'api.update_me(text, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'api.me()', 'execute'))::int;
select 1 / (not has_function_privilege('public', 'core.user_json(core.users)', 'execute'))::int;
select 1 / (core.normalize_email('  Someone@Example.COM ') = 'someone@example.com')::int;

-- a signed-in user reads their profile
insert into core.users (email, full_name) values ('verify-me@example.com', 'Verify Me');
select
  set_config('request.jwt.claims', jsonb_build_object('sub', id::text)::text, true)
from core.users where email = 'verify-me@example.com';
select 1 / (api.me() ->> 'email' = 'verify-me@example.com')::int;
select 1 / (api.update_me(full_name => 'Verified') ->> 'full_name' = 'Verified')::int;

rollback;
