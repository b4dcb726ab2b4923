-- Deploy commercecore:procedures/errors to pg
-- requires: schema/namespaces
-- The errors of the API, raised in one place: SQLSTATE PTxyz (the gateway answers HTTP xyz), a human
-- message, a detail that is a JSON object with a stable "code" key and the machine-readable fields, and a
-- hint saying what to do. The functions of procedures/ call these instead of spelling out
-- RAISE ... USING each time. Internal: executable by the owner only; the callers are SECURITY DEFINER
-- functions owned by app_owner (or functions they call).
-- Volatile on purpose: an immutable function with constant arguments could be evaluated while a statement
-- is planned, and raise where the statement was never meant to run.
begin;

set local role app_owner;

create or replace function core.raise_error(
  status text, code text, message text, details jsonb default '{}', hint text default null
) returns void
language plpgsql
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  sqlstate_code text := 'PT' || raise_error.status;
  detail_text text :=
    (pg_catalog.jsonb_build_object('code', raise_error.code) || coalesce(raise_error.details, '{}'))::text;
begin
  -- RAISE refuses a null option, so an error without a hint is raised without the option
  if raise_error.hint is null then
    raise exception using
      errcode = sqlstate_code,
      message = raise_error.message,
      detail = detail_text;
  end if;
  raise exception using
    errcode = sqlstate_code,
    message = raise_error.message,
    detail = detail_text,
    hint = raise_error.hint;
end;
$$;

comment on function core.raise_error(text, text, text, jsonb, text) is
'Raises the API error of HTTP status `status` (SQLSTATE PT<status>, e.g. 409 -> PT409) with the message,
the detail {"code": code} merged with details (a JSON object of the machine-readable fields) as text, and
the hint (none when null). Never returns. Internal: for the functions of the API, executable by the owner
only.';

create or replace function core.raise_not_found(resource text, id anyelement, hint text default null, message text default null)
returns void
language plpgsql
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
  perform core.raise_error(
    '404',
    'not_found',
    coalesce(raise_not_found.message, pg_catalog.format('There is no %s with this id.', raise_not_found.resource)),
    pg_catalog.jsonb_build_object('resource', raise_not_found.resource, 'id', raise_not_found.id),
    raise_not_found.hint
  );
end;
$$;

comment on function core.raise_not_found(text, anyelement, text, text) is
'Raises PT404 {"code": "not_found", "resource": resource, "id": id} with the hint, and the message (by
default "There is no <resource> with this id."). Use it alike for a row that does not exist and for one the
caller may not see, so that another user''s rows are never revealed. Internal, as core.raise_error.';

create or replace function core.raise_invalid(field text, message text, details jsonb default '{}', hint text default null)
returns void
language plpgsql
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
  perform core.raise_error(
    '422',
    'invalid_input',
    raise_invalid.message,
    pg_catalog.jsonb_build_object('field', raise_invalid.field) || coalesce(raise_invalid.details, '{}'),
    raise_invalid.hint
  );
end;
$$;

comment on function core.raise_invalid(text, text, jsonb, text) is
'Raises PT422 {"code": "invalid_input", "field": field} merged with details (what was wrong: reason, value,
min, max, max_length, allowed, ...), with the message and the hint. Internal, as core.raise_error.';

commit;
