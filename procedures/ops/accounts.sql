-- Deploy commercecore:procedures/ops/accounts to pg
-- requires: schema/users_disabled
-- requires: procedures/users
-- requires: procedures/auth/sessions
-- The accounts as an operator manages them from `commercecore users create|list|set-role|disable|enable`:
-- the first staff account of a new installation and every one after it, without SQL by hand. The rules
-- live here; the command line hashes the password (argon2id, as the gateway does) and calls these
-- functions on the deploying role's connection. Owner only: no request role and no gateway login may
-- execute them. A role change or a disable revokes the account's sessions, as api.set_user_role does.
begin;

set local role app_owner;

create or replace function ops.check_account_role(role text) returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if check_account_role.role is null or check_account_role.role not in ('app_readwrite', 'app_admin') then
    perform core.raise_invalid(
      'role', 'The role must be app_readwrite or app_admin.',
      pg_catalog.jsonb_build_object(
        'value', check_account_role.role, 'allowed', pg_catalog.jsonb_build_array('app_readwrite', 'app_admin')
      ),
      'Give app_admin for staff or app_readwrite for a customer.'
    );
  end if;
  return check_account_role.role;
end;
$$;

comment on function ops.check_account_role(text) is
'The role of an account, or PT422 invalid_input (field role, with the allowed ones) unless app_readwrite or
app_admin: the roles a token may carry (core.users_role_check).';

create or replace function ops.account_json(u core.users) returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select core.user_json(u) || pg_catalog.jsonb_build_object('disabled_at', u.disabled_at)
$$;

comment on function ops.account_json(core.users) is
'An account as the operator''s commands show it: the user shape with disabled_at (null while active).';

create or replace function ops.locked_account(email text) returns core.users
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  found_user core.users;
begin
  select u.* into found_user
  from core.users as u
  where u.email = core.normalize_email(locked_account.email)
  for update;
  if not found then
    perform core.raise_not_found(
      'user', core.normalize_email(locked_account.email), 'List the accounts with commercecore users list.',
      message => pg_catalog.format('There is no account with the email address %s.', locked_account.email)
    );
  end if;
  return found_user;
end;
$$;

comment on function ops.locked_account(text) is
'The account of an email address (trimmed, lower-cased), locked for update; PT404 not_found (resource user,
id the address) when there is none, PT422 invalid_input for an address that is not one.';

create or replace function ops.create_account(
  email text, role text, password_hash text, full_name text default ''
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  new_email text := core.normalize_email(create_account.email);
  new_role text := ops.check_account_role(create_account.role);
  new_full_name text := coalesce(pg_catalog.btrim(create_account.full_name), '');
  created core.users;
begin
  if pg_catalog.length(new_full_name) > 200 then
    perform core.raise_invalid(
      'full_name', 'The full name is too long.',
      pg_catalog.jsonb_build_object('reason', 'too_long', 'max_length', 200), 'Give at most 200 characters.'
    );
  end if;
  begin
    insert into core.users as u (email, full_name, role)
    values (new_email, new_full_name, new_role)
    returning * into created;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'email_taken', pg_catalog.format('The email address %s already has an account.', new_email),
      pg_catalog.jsonb_build_object('field', 'email'),
      'Change its role with commercecore users set-role instead.'
    );
  end;
  -- the check constraint credentials_password_hash_check refuses anything but an argon2id PHC string
  insert into auth.credentials (user_id, password_hash) values (created.id, create_account.password_hash);
  -- failures counted while the address had no account do not follow it into the new one
  delete from auth.login_failures as f
  where f.email_hash = pg_catalog.sha256(pg_catalog.convert_to(new_email, 'UTF8'));
  return ops.account_json(created);
end;
$$;

comment on function ops.create_account(text, text, text, text) is
'commercecore users create: an account with a role (app_admin for staff, app_readwrite for a customer) and
the argon2id hash of its password, made by the caller. Returns the account. PT422 invalid_input naming the
field (email, role, full_name); PT409 email_taken; 23514 for a hash that is not argon2id.';

create or replace function ops.accounts(of_role text default null)
returns table (
  id bigint, email text, full_name text, role text, created_at timestamptz, disabled_at timestamptz,
  has_password boolean, last_session_at timestamptz
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if accounts.of_role is not null then
    perform ops.check_account_role(accounts.of_role);
  end if;
  return query
  select
    u.id, u.email, u.full_name, u.role, u.created_at, u.disabled_at,
    exists (select from auth.credentials as c where c.user_id = u.id),
    (select max(s.issued_at) from auth.sessions as s where s.user_id = u.id)
  from core.users as u
  where accounts.of_role is null or u.role = accounts.of_role
  order by u.id;
end;
$$;

comment on function ops.accounts(text) is
'commercecore users list: every account (of_role: of that role only), oldest first, with when it was disabled
(null: active), whether it has a password, and when its latest session was issued. PT422 for a role other
than app_readwrite or app_admin.';

create or replace function ops.set_account_role(email text, role text) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  new_role text := ops.check_account_role(set_account_role.role);
  account core.users := ops.locked_account(set_account_role.email);
  revoked integer := 0;
begin
  if account.role <> new_role then
    update core.users as u set role = new_role where u.id = account.id returning * into account;
    -- tokens carry the role: those issued with the old one stop working
    revoked := auth.revoke_user_sessions(account.id);
  end if;
  return ops.account_json(account) || pg_catalog.jsonb_build_object('sessions_revoked', revoked);
end;
$$;

comment on function ops.set_account_role(text, text) is
'commercecore users set-role: gives an account the role app_admin (staff) or app_readwrite (customer); when
it changes, the account''s sessions are revoked (their tokens carry the old role). Returns the account and
sessions_revoked. PT404 unknown address; PT422 invalid role or address.';

create or replace function ops.set_account_disabled(email text, disabled boolean) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  account core.users := ops.locked_account(set_account_disabled.email);
  revoked integer := 0;
begin
  if set_account_disabled.disabled is null then
    perform core.raise_invalid('disabled', 'disabled must be true or false.');
  end if;
  update core.users as u
  set disabled_at = case when set_account_disabled.disabled then coalesce(u.disabled_at, pg_catalog.now()) end
  where u.id = account.id
  returning * into account;
  if set_account_disabled.disabled then
    revoked := auth.revoke_user_sessions(account.id);
  end if;
  return ops.account_json(account) || pg_catalog.jsonb_build_object('sessions_revoked', revoked);
end;
$$;

comment on function ops.set_account_disabled(text, boolean) is
'commercecore users disable|enable: a disabled account keeps its rows but is not found at login, no session
opens for it, and its open sessions are revoked here, in the same transaction. Disabling twice keeps the
first disabled_at. Returns the account and sessions_revoked. PT404 unknown address.';

commit;
