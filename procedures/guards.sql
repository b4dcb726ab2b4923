-- Deploy commercecore:procedures/guards to pg
-- requires: procedures/context
-- requires: procedures/errors
-- requires: schema/users
-- The guards of the API functions, in one place: who may call a function beyond its grant (a signed-in user
-- whose account exists, staff), each raising the same error wherever it is used. A function calls its guard
-- first, before any other lock or check. Internal: executable by the owner only, as the error helpers.
-- Two codes for a missing user are part of the HTTP API: `unauthenticated` from the order functions,
-- `not_authenticated` from the profile and address functions.
begin;

set local role app_owner;

create or replace function core.raise_not_signed_in(
  hint text default 'Sign in, then send the session cookie or an Authorization: Bearer token.'
)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform core.raise_error('401', 'not_authenticated', 'You are not signed in.', hint => raise_not_signed_in.hint);
end;
$$;

comment on function core.raise_not_signed_in(text) is
'Raises PT401 {"code": "not_authenticated"} "You are not signed in." with the hint (by default: sign in and
send the session cookie or a bearer token).';

create or replace function core.require_signed_in()
returns bigint
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.current_user_id();
begin
  if uid is null then
    perform core.raise_not_signed_in();
  end if;
  return uid;
end;
$$;

comment on function core.require_signed_in() is
'The signed-in user''s id, from the token alone (the account is not looked up); PT401 not_authenticated
when the request has no user.';

create or replace function core.signed_in_user(lock_row boolean default false)
returns core.users
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  found_user core.users;
begin
  -- FOR NO KEY UPDATE serialises one user's requests that take it (and only theirs) without blocking the
  -- foreign-key checks of new orders and addresses that reference the user
  if signed_in_user.lock_row then
    select u.* into found_user from core.users as u where u.id = core.current_user_id() for no key update;
  else
    select u.* into found_user from core.users as u where u.id = core.current_user_id();
  end if;
  if not found then
    perform core.raise_not_signed_in();
  end if;
  return found_user;
end;
$$;

comment on function core.signed_in_user(boolean) is
'The signed-in user''s row, locked FOR NO KEY UPDATE with lock_row; PT401 not_authenticated when the
request has no user or the account no longer exists.';

create or replace function core.require_customer()
returns bigint
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  uid bigint := core.current_user_id();
begin
  if uid is null or not exists (select from core.users as u where u.id = uid) then
    perform core.raise_error('401', 'unauthenticated', 'Sign in to order.', hint => 'Send a valid access token.');
  end if;
  return uid;
end;
$$;

comment on function core.require_customer() is
'The signed-in user''s id, for the order functions (staff order too); raises PT401 unauthenticated when the
request has no (existing) user.';

create or replace function core.require_staff(
  message text default 'Only staff may change the catalog.', hint text default 'Sign in with a staff account.'
)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if not core.is_admin() then
    perform core.raise_error('403', 'forbidden', require_staff.message, hint => require_staff.hint);
  end if;
end;
$$;

comment on function core.require_staff(text, text) is
'Raises PT403 forbidden with the message and hint (no hint when null) unless the request runs as app_admin:
the staff functions check it besides their grant.';

commit;
