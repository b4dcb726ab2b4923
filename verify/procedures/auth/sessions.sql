-- Verify commercecore:procedures/auth/sessions on pg
begin;

select 1 / has_function_privilege('authenticator', 'auth.session_active(uuid, bigint, text)', 'execute')::int;
select 1 / has_function_privilege(
  'authenticator', 'auth.create_session(bigint, uuid, timestamptz, text)', 'execute'
)::int;
select 1 / (not has_function_privilege('app_admin', 'auth.user_claims(bigint)', 'execute'))::int;

-- a session is active until revoked, and only with the role it was issued with
insert into core.users (email) values ('verify-sessions@example.com');
select set_config('verify.user', id::text, true) from core.users where email = 'verify-sessions@example.com';
select auth.create_session(
  current_setting('verify.user')::bigint, '00000000-0000-4000-8000-00000000c0de', now() + interval '1 hour'
);
select
  1 / auth.session_active(
    '00000000-0000-4000-8000-00000000c0de', current_setting('verify.user')::bigint, 'app_readwrite'
  )::int;
select
  1 / (not auth.session_active(
    '00000000-0000-4000-8000-00000000c0de', current_setting('verify.user')::bigint, 'app_admin'
  ))::int;
select 1 / auth.revoke_session('00000000-0000-4000-8000-00000000c0de')::int;
select
  1 / (not auth.session_active(
    '00000000-0000-4000-8000-00000000c0de', current_setting('verify.user')::bigint, 'app_readwrite'
  ))::int;
select 1 / (auth.user_claims(current_setting('verify.user')::bigint) ->> 'role' = 'app_readwrite')::int;

-- no session opens for a disabled account
update core.users set disabled_at = now() where id = current_setting('verify.user')::bigint;
do $$
begin
  perform auth.create_session(
    current_setting('verify.user')::bigint, '00000000-0000-4000-8000-00000000c0df', now() + interval '1 hour'
  );
  raise exception 'a disabled account got a session';
exception when sqlstate 'PT401' then
  null;
end;
$$;

rollback;
