-- Deploy commercecore:procedures/auth/sessions to pg
-- requires: schema/auth
-- Sessions: every JWT the gateway issues is a row (its jti), with the role the token carries, so that a
-- token can be revoked and a token re-signed with another role is refused. Executable by the gateway's login
-- (authenticator) only.
begin;

set local role app_owner;

create or replace function auth.create_session(
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

create or replace function auth.session_active(jti uuid, user_id bigint, role text) returns boolean
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

create or replace function auth.revoke_session(jti uuid) returns boolean
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

create or replace function auth.revoke_user_sessions(user_id bigint) returns integer
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

create or replace function auth.user_claims(user_id bigint) returns jsonb
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

commit;
