-- Deploy commercecore:procedures/auth/accounts to pg
-- requires: procedures/auth/sessions
-- requires: procedures/users
-- requires: procedures/guards
-- requires: schema/login_failures
-- Accounts: signup, password changes (which end every session) and staff's role changes (which end the
-- sessions whose tokens carry the old role). The auth functions run as the gateway's login (authenticator)
-- before it switches to a request role: there core.request_role() is 'none', which row-level security treats
-- as a service. The database never sees a password: the gateway hashes it with argon2id, and the check
-- constraint on auth.credentials refuses anything but a complete argon2id hash (PHC string), in one
-- transaction with the rest of a signup.
begin;

set local role app_owner;

create or replace function auth.register_user(email text, full_name text, password_hash text) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  new_email text := core.normalize_email(register_user.email);
  new_full_name text := coalesce(pg_catalog.btrim(register_user.full_name), '');
  created core.users;
begin
  if pg_catalog.length(new_full_name) > 200 then
    perform core.raise_invalid(
      'full_name', 'The full name is too long.',
      pg_catalog.jsonb_build_object('reason', 'too_long', 'max_length', 200), 'Send at most 200 characters.'
    );
  end if;
  begin
    insert into core.users as u (email, full_name, role)
    values (new_email, new_full_name, 'app_readwrite')
    returning * into created;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'email_taken', 'This email address is already registered.',
      pg_catalog.jsonb_build_object('field', 'email'), 'Sign in instead, or use another email address.'
    );
  end;
  insert into auth.credentials (user_id, password_hash) values (created.id, register_user.password_hash);
  -- failures counted while the address had no account do not follow it into the new one
  delete from auth.login_failures as f
  where f.email_hash = pg_catalog.sha256(pg_catalog.convert_to(new_email, 'UTF8'));
  return core.user_json(created);
end;
$$;

comment on function auth.register_user(text, text, text) is
'Signup: creates a customer (role app_readwrite, always) with an argon2id password hash made by the gateway
and returns the user {id, email, full_name, role, created_at}. Email trimmed and lower-cased; invalid ->
PT422 {"code":"invalid_input","field":"email"}; registered -> PT409 {"code":"email_taken"}; anything but a
complete argon2id PHC string -> 23514 (credentials_password_hash_check).';

grant execute on function auth.register_user(text, text, text) to authenticator;

create or replace function auth.change_password(user_id bigint, password_hash text) returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into auth.credentials as c (user_id, password_hash)
  values (change_password.user_id, change_password.password_hash)
  on conflict on constraint credentials_pkey do update
  set password_hash = excluded.password_hash,
    password_changed_at = pg_catalog.now();
  return auth.revoke_user_sessions(change_password.user_id);
end;
$$;

comment on function auth.change_password(bigint, text) is
'Stores a new argon2id hash (made by the gateway after checking the old password) and revokes ALL sessions
of the user, the caller''s included; returns how many were revoked. The gateway then issues a new session
for the client that made the change. An unknown user -> 23503.';

grant execute on function auth.change_password(bigint, text) to authenticator;

create or replace function auth.upgrade_password_hash(user_id bigint, old_hash text, new_hash text) returns boolean
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  update auth.credentials as c
  set password_hash = upgrade_password_hash.new_hash
  where c.user_id = upgrade_password_hash.user_id and c.password_hash = upgrade_password_hash.old_hash
  returning true
$$;

comment on function auth.upgrade_password_hash(bigint, text, text) is
'At a successful login, replaces a hash made with older argon2 parameters by one of the same password made
with the current ones; the sessions stay, since the password did not change. Only while the stored hash is
still old_hash (a concurrent password change wins); true when replaced, null otherwise.';

grant execute on function auth.upgrade_password_hash(bigint, text, text) to authenticator;

create or replace function api.set_user_role(user_id bigint, role text) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  old_role text;
  updated core.users;
begin
  perform core.require_staff('Only staff may change roles.', hint => null);
  if set_user_role.role is null or set_user_role.role not in ('app_readwrite', 'app_admin') then
    perform core.raise_invalid(
      'role', 'The role must be app_readwrite or app_admin.',
      pg_catalog.jsonb_build_object('allowed', pg_catalog.jsonb_build_array('app_readwrite', 'app_admin')),
      'Send role "app_readwrite" (customer) or "app_admin" (staff).'
    );
  end if;
  if set_user_role.user_id = core.current_user_id() then
    perform core.raise_error(
      '409', 'own_role', 'You cannot change your own role.',
      pg_catalog.jsonb_build_object('user_id', set_user_role.user_id), 'Ask another member of staff.'
    );
  end if;

  select u.role into old_role from core.users as u where u.id = set_user_role.user_id for update;
  if not found then
    perform core.raise_not_found('user', set_user_role.user_id, message => 'User not found.');
  end if;
  update core.users as u set role = set_user_role.role
  where u.id = set_user_role.user_id
  returning * into updated;
  if old_role <> updated.role then
    -- tokens carry the role: those issued with the old one stop working
    perform auth.revoke_user_sessions(updated.id);
  end if;
  return core.user_json(updated);
end;
$$;

comment on function api.set_user_role(bigint, text) is
'Staff only: makes a user a customer (app_readwrite) or staff (app_admin); when the role changes, revokes
the user''s sessions, whose tokens carry the old role. Not for one''s own account (409). Unknown user -> 404.
@route POST /users/{user_id}/role';

grant execute on function api.set_user_role(bigint, text) to app_admin;

commit;
