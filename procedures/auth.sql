-- Deploy commercecore:procedures/auth to pg
-- requires: schema/auth
-- requires: schema/login_failures
-- requires: procedures/me
-- requires: schema/errors
-- The gateway's auth internals: signup, login lookup and the per-client delay after failures, sessions (JWT
-- ids, with the role they were issued with) and password changes.
-- Only the gateway's login (authenticator) may execute them, before it switches to a request role: there
-- core.request_role() is 'none', which row-level security treats as a service. The database never sees a
-- password: the gateway hashes it with argon2id, and the check constraint on auth.credentials refuses
-- anything but a complete argon2id hash (PHC string) — in one transaction with the rest of a signup.
begin;

set local role app_owner;

create function auth.register_user(email text, full_name text, password_hash text) returns jsonb
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

create function auth.login_lookup(email text)
returns table (user_id bigint, role text, password_hash text)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select u.id, u.role, c.password_hash
  from core.users as u
  join auth.credentials as c on c.user_id = u.id
  where u.email = pg_catalog.lower(pg_catalog.btrim(login_lookup.email))
$$;

comment on function auth.login_lookup(text) is
'Login, step 1: the account of an email address (trimmed, lower-cased): user_id, role, password_hash. No
row for an unknown address or an account without a password: the gateway should still verify the password
against a dummy hash, so that the answer takes as long, and record the failure with
auth.record_login_failure.';

grant execute on function auth.login_lookup(text) to authenticator;

create function auth.login_delay(email text, client inet)
returns table (failed_attempts integer, retry_at timestamptz)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select f.failed_attempts, case when f.retry_at > pg_catalog.now() then f.retry_at end
  from auth.login_failures as f
  where f.email_hash = pg_catalog.sha256(
      pg_catalog.convert_to(pg_catalog.lower(pg_catalog.btrim(coalesce(login_delay.email, ''))), 'UTF8')
    )
    and f.client = login_delay.client
    and f.last_failed_at >= pg_catalog.now() - interval '1 day'
$$;

comment on function auth.login_delay(text, inet) is
'Login, step 0: the failures of this email address from this client in a row (the pair''s row, none when
it has no recent failure) and retry_at while its delay runs (null otherwise). During the delay the gateway
answers 429 with Retry-After without checking the password. Other clients are not concerned: the owner
of the account signs in from another address at once.';

grant execute on function auth.login_delay(text, inet) to authenticator;

create function auth.record_login_failure(
  email text,
  client inet,
  free_attempts integer default 3,
  delay_base interval default '5 seconds',
  delay_max interval default '15 minutes'
)
returns table (failed_attempts integer, retry_at timestamptz)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  pair_hash bytea := pg_catalog.sha256(
    pg_catalog.convert_to(pg_catalog.lower(pg_catalog.btrim(coalesce(record_login_failure.email, ''))), 'UTF8')
  );
  attempts integer;
  wait_seconds double precision;
  next_attempt timestamptz;
begin
  if record_login_failure.client is null
    or record_login_failure.free_attempts is null or record_login_failure.free_attempts < 1
    or record_login_failure.delay_base is null or record_login_failure.delay_base <= interval '0'
    or record_login_failure.delay_max is null or record_login_failure.delay_max < record_login_failure.delay_base
  then
    raise exception using
      errcode = '22023',
      message = 'client is required, free_attempts must be at least 1, delay_base positive and delay_max'
        || ' at least delay_base.';
  end if;

  -- a pair idle for a day starts a new count, as if its row had been purged already
  insert into auth.login_failures as f (email_hash, client, failed_attempts, last_failed_at)
  values (pair_hash, record_login_failure.client, 1, pg_catalog.now())
  on conflict on constraint login_failures_pkey do update
  set failed_attempts = case
      when f.last_failed_at < pg_catalog.now() - interval '1 day' then 1
      else f.failed_attempts + 1
    end,
    last_failed_at = pg_catalog.now(),
    retry_at = null
  returning f.failed_attempts into attempts;

  if attempts >= record_login_failure.free_attempts then
    -- base * 2^(failures past the free ones), capped; the exponent is bounded so that the product never
    -- overflows whatever the two intervals are
    wait_seconds := least(
      extract(epoch from record_login_failure.delay_max)::double precision,
      extract(epoch from record_login_failure.delay_base)::double precision
      * pg_catalog.power(2::double precision, least(attempts - record_login_failure.free_attempts, 60))
    );
    next_attempt := pg_catalog.now() + pg_catalog.make_interval(secs => wait_seconds);
    update auth.login_failures as f set retry_at = next_attempt
    where f.email_hash = pair_hash and f.client = record_login_failure.client;
  end if;

  failed_attempts := attempts;
  retry_at := next_attempt;
  return next;
end;
$$;

comment on function auth.record_login_failure(text, inet, integer, interval, interval) is
'Login failed (wrong password or unknown address) for this email address from this client: counts the
pair''s failures in a row. The first free_attempts are free; from the last free one on, the pair''s next
attempt must wait delay_base, doubling with every further failure, at most delay_max. Returns
(failed_attempts, retry_at), retry_at null while attempts are free. Unknown addresses are counted the same
way, so the answer never reveals whether an address is registered; nothing is counted on the account, so
no failure locks its owner out. Called only outside a running delay (the gateway refuses those attempts
unchecked), so a refused attempt never lengthens it.';

grant execute on function auth.record_login_failure(text, inet, integer, interval, interval) to authenticator;

create function auth.record_login_success(user_id bigint, client inet) returns void
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from auth.login_failures as f
  using core.users as u
  where u.id = record_login_success.user_id
    and f.email_hash = pg_catalog.sha256(pg_catalog.convert_to(u.email, 'UTF8'))
    and f.client = record_login_success.client
$$;

comment on function auth.record_login_success(bigint, inet) is
'Login succeeded from this client: forgets the failures of the pair (the user''s address, this client).
Other clients'' failures stay: a success from one address does not free another (call it only after
auth.login_delay said no delay runs).';

grant execute on function auth.record_login_success(bigint, inet) to authenticator;

create function auth.create_session(
  user_id bigint, jti uuid, expires_at timestamptz, user_agent text default ''
) returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  issued_role text;
begin
  select u.role into issued_role from core.users as u where u.id = create_session.user_id;
  if not found then
    raise exception using
      errcode = '23503',
      message = pg_catalog.format('No user %s to open a session for.', create_session.user_id);
  end if;
  insert into auth.sessions (jti, user_id, role, expires_at, user_agent)
  values (
    create_session.jti,
    create_session.user_id,
    issued_role,
    create_session.expires_at,
    pg_catalog.left(coalesce(create_session.user_agent, ''), 500)
  );
end;
$$;

comment on function auth.create_session(bigint, uuid, timestamptz, text) is
'Records an issued JWT (its jti and exp) so that it can be revoked, with the role the user has now, which
the token carries (auth.user_claims in the same statement reads the same row). The user agent is cut to
500 characters; expires_at must lie in the future (sessions_expires_at_check); an unknown user -> 23503.';

grant execute on function auth.create_session(bigint, uuid, timestamptz, text) to authenticator;

create function auth.session_active(jti uuid, user_id bigint, role text) returns boolean
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  -- only the primary key in the where clause: the plan is always one sessions_pkey probe
  select coalesce((
    select s.user_id = session_active.user_id and s.role = session_active.role and s.revoked_at is null
      and s.expires_at > pg_catalog.now()
    from auth.sessions as s
    where s.jti = session_active.jti
  ), false)
$$;

comment on function auth.session_active(uuid, bigint, text) is
'True when the JWT id is a session of this user, issued with this role, neither revoked nor expired (a
primary-key lookup). A token re-signed with another role claim (a leaked HS256 secret) finds its session
but not its role: false. The gateway calls it in every authenticated request''s transaction, before
switching to the request role.';

grant execute on function auth.session_active(uuid, bigint, text) to authenticator;

create function auth.revoke_session(jti uuid) returns boolean
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  with revoked as (
    update auth.sessions as s set revoked_at = pg_catalog.now()
    where s.jti = revoke_session.jti and s.revoked_at is null
    returning 1
  )
  select exists (select from revoked)
$$;

comment on function auth.revoke_session(uuid) is
'Logout: revokes one session. True if it was not revoked already (false for an unknown or revoked jti).';

grant execute on function auth.revoke_session(uuid) to authenticator;

create function auth.revoke_user_sessions(user_id bigint) returns integer
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  with revoked as (
    update auth.sessions as s set revoked_at = pg_catalog.now()
    where s.user_id = revoke_user_sessions.user_id and s.revoked_at is null
    returning 1
  )
  select count(*)::integer from revoked
$$;

comment on function auth.revoke_user_sessions(bigint) is
'Revokes every session of a user ("sign out everywhere"); returns how many were still unrevoked.';

grant execute on function auth.revoke_user_sessions(bigint) to authenticator;

create function auth.change_password(user_id bigint, password_hash text) returns integer
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

create function auth.upgrade_password_hash(user_id bigint, old_hash text, new_hash text) returns boolean
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

create function auth.user_claims(user_id bigint) returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object('sub', u.id::text, 'role', u.role, 'email', u.email)
  from core.users as u
  where u.id = user_claims.user_id
$$;

comment on function auth.user_claims(bigint) is
'The claims a JWT of this user carries: {"sub": "<id>" (a string, as RFC 7519 wants), "role", "email"};
null for an unknown user. The gateway adds exp, iat, jti (and aud).';

grant execute on function auth.user_claims(bigint) to authenticator;

create function api.set_user_role(user_id bigint, role text) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  old_role text;
  updated core.users;
begin
  if not core.is_admin() then
    perform core.raise_error('403', 'forbidden', 'Only staff may change roles.');
  end if;
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
