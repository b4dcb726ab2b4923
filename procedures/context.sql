-- Deploy commercecore:procedures/context to pg
-- requires: schema/namespaces
-- Who is asking: the request context the gateway sets per transaction (docs/http-api.md section 2), read
-- by row-level security and by the functions. The JWT claims are the identity; the `role` setting is the
-- request role, which SECURITY DEFINER functions do not change (they change current_user, not the role
-- setting).
-- Row-level security policies call these as scalar subqueries, `(select core.current_user_id())`, so that
-- each is evaluated once per statement (an InitPlan) rather than once per row.
begin;

set local role app_owner;

create or replace function core.current_user_id() returns bigint
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', '')::bigint
$$;

comment on function core.current_user_id() is
'The signed-in user''s id: the `sub` claim of the request''s JWT, or null for anonymous requests.';

create or replace function core.request_role() returns text
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(current_setting('role', true), 'none')
$$;

comment on function core.request_role() is
'The role the request runs as (app_readonly, app_readwrite, app_admin, app_payments), or `none` for a
session that never SET ROLE; inside a SECURITY DEFINER function still the caller''s, not the owner''s.';

create or replace function core.is_admin() returns boolean
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select core.request_role() = 'app_admin'
$$;

comment on function core.is_admin() is 'True when the request runs as staff (app_admin): row-level security lets it see all rows.';

create or replace function core.is_service() returns boolean
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select core.request_role() in ('app_payments', 'app_dba', 'app_owner', 'none')
$$;

comment on function core.is_service() is
'True for the back-office paths that act for no customer: payments (app_payments), DBA and owner
sessions, and sessions that never SET ROLE (scheduled jobs, psql, and the gateway''s own auth calls:
the authenticator inherits no privilege, so without a request role it can run only the auth functions).
An HTTP request always runs under a request role, so it never counts as a service.';

create or replace function core.request_id() returns text
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select nullif(current_setting('request.id', true), '')
$$;

comment on function core.request_id() is 'The gateway''s request id (X-Request-Id) of the current transaction, for audit rows.';

commit;
