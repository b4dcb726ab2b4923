-- Deploy commercecore:procedures/users to pg
-- requires: schema/users
-- requires: procedures/errors
-- requires: procedures/guards
-- The signed-in user's own profile: GET /me and PATCH /me, and the one place that builds the user shape.
begin;

set local role app_owner;

create or replace function core.user_json(u core.users) returns jsonb
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'id', u.id,
    'email', u.email,
    'full_name', u.full_name,
    'role', u.role,
    'created_at', u.created_at
  )
$$;

comment on function core.user_json(core.users) is
'The user shape of the API (docs/http-api.md section 6): {id, email, full_name, role, created_at}.
Internal: called by the api and auth functions, executable by the owner only.';

create or replace function core.normalize_email(email text) returns text
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  normalized text := pg_catalog.lower(pg_catalog.btrim(normalize_email.email));
begin
  if normalized is null or normalized = '' then
    perform core.raise_invalid(
      'email', 'The email address is missing.',
      pg_catalog.jsonb_build_object('reason', 'missing'), 'Send an email address such as name@example.com.'
    );
  end if;
  if pg_catalog.length(normalized) > 254 or normalized !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
    perform core.raise_invalid(
      'email', 'The email address is not valid.',
      pg_catalog.jsonb_build_object('reason', 'format'),
      'Send an email address such as name@example.com (at most 254 characters).'
    );
  end if;
  return normalized;
end;
$$;

comment on function core.normalize_email(text) is
'Trims and lower-cases an email address, or raises PT422 {"code":"invalid_input","field":"email"}.
Internal: the same rule as the check constraint users_email_check, with an error that names the field.';

create or replace function api.me() returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- the guard reads the token's own row: row-level security alone would show staff every user
  return core.user_json(core.signed_in_user());
end;
$$;

comment on function api.me() is
'The signed-in user: {id, email, full_name, role, created_at}. Without a signed-in user: 401
{"code":"not_authenticated"}.
@route GET /me';

grant execute on function api.me() to app_readwrite, app_admin;

create or replace function api.update_me(full_name text default null, email text default null) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.require_signed_in();
  new_full_name text := pg_catalog.btrim(update_me.full_name);
  new_email text;
  updated core.users;
begin
  if new_full_name is not null and pg_catalog.length(new_full_name) > 200 then
    perform core.raise_invalid(
      'full_name', 'The full name is too long.',
      pg_catalog.jsonb_build_object('reason', 'too_long', 'max_length', 200), 'Send at most 200 characters.'
    );
  end if;
  if update_me.email is not null then
    new_email := core.normalize_email(update_me.email);
  end if;

  begin
    update core.users as u
    set full_name = coalesce(new_full_name, u.full_name),
      email = coalesce(new_email, u.email)
    where u.id = uid
    returning * into updated;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'email_taken', 'This email address is already registered.',
      pg_catalog.jsonb_build_object('field', 'email'), 'Use another email address.'
    );
  end;
  if updated.id is null then
    perform core.raise_not_signed_in('Sign in again: this account no longer exists.');
  end if;
  return core.user_json(updated);
end;
$$;

comment on function api.update_me(text, text) is
'Changes the signed-in user''s full_name and/or email (omitted or null fields stay as they are) and returns
the user. The email is trimmed and lower-cased; invalid -> 422 {"code":"invalid_input","field":...};
registered to someone else -> 409 {"code":"email_taken"}.
@route PATCH /me';

grant execute on function api.update_me(text, text) to app_readwrite, app_admin;

commit;
