-- Deploy commercecore:procedures/addresses/endpoints to pg
-- requires: procedures/addresses/fields
-- requires: procedures/guards
-- The signed-in user's addresses: the rows of GET /me/addresses, POST /me/addresses, PATCH|DELETE
-- /me/addresses/{id}. At most one default address per kind: making one default clears the previous default in
-- the same transaction, under a lock on the user's row (core.signed_in_user), so concurrent requests queue
-- instead of colliding on the unique index addresses_one_default_per_kind. Lock order: the user's row, then
-- address rows.
begin;

set local role app_owner;

create or replace function api.my_addresses()
returns table (
  id bigint, kind text, is_default boolean, full_name text, line1 text, line2 text, city text, region text,
  postal_code text, country text, phone text, created_at timestamptz, updated_at timestamptz
)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select a.id, a.kind, a.is_default, a.full_name, a.line1, a.line2, a.city, a.region, a.postal_code, a.country,
    a.phone, a.created_at, a.updated_at
  from core.addresses as a
  where a.user_id = core.current_user_id()
  order by a.id
$$;

comment on function api.my_addresses() is
'The signed-in user''s addresses (also staff: only their own), the rows behind the view api.addresses.
It exists because the row-level security policies call core functions that the request roles may not
execute: a view owned by app_owner still checks function privileges as the caller.';

grant execute on function api.my_addresses() to app_readwrite, app_admin;

create or replace function api.create_address(
  kind text,
  full_name text,
  line1 text,
  city text,
  postal_code text,
  country text,
  line2 text default '',
  region text default '',
  phone text default '',
  is_default boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  owner_id bigint := (core.signed_in_user(lock_row => true)).id;
  new_kind text := core.address_kind(create_address.kind);
  created core.addresses;
begin
  if coalesce(create_address.is_default, false) then
    update core.addresses as a set is_default = false
    where a.user_id = owner_id and a.kind = new_kind and a.is_default;
  end if;

  insert into core.addresses as a (
    user_id, kind, is_default, full_name, line1, line2, city, region, postal_code, country, phone
  ) values (
    owner_id,
    new_kind,
    coalesce(create_address.is_default, false),
    core.address_field('full_name', coalesce(create_address.full_name, ''), true, 200),
    core.address_field('line1', coalesce(create_address.line1, ''), true, 200),
    coalesce(core.address_field('line2', create_address.line2, false, 200), ''),
    core.address_field('city', coalesce(create_address.city, ''), true, 100),
    coalesce(core.address_field('region', create_address.region, false, 100), ''),
    core.address_field('postal_code', coalesce(create_address.postal_code, ''), true, 20),
    core.address_country(coalesce(create_address.country, '')),
    coalesce(core.address_field('phone', create_address.phone, false, 40), '')
  )
  returning * into created;

  perform pg_catalog.set_config('response.status', '201', true);
  perform pg_catalog.set_config(
    'response.headers',
    pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('Location', '/me/addresses/' || created.id))::text,
    true
  );
  return core.address_json(created);
end;
$$;

comment on function api.create_address(text, text, text, text, text, text, text, text, text, boolean) is
'Adds an address (kind shipping or billing) for the signed-in user and returns it with 201 and a Location
header. With is_default true it becomes the default of its kind and the previous default stops being one.
Invalid fields -> 422 {"code":"invalid_input","field":...}; the country is upper-cased and must be an
ISO 3166-1 alpha-2 code.
@route POST /me/addresses';

grant execute on function api.create_address(text, text, text, text, text, text, text, text, text, boolean)
to app_readwrite, app_admin;

create or replace function api.update_address(
  id bigint,
  kind text default null,
  full_name text default null,
  line1 text default null,
  line2 text default null,
  city text default null,
  region text default null,
  postal_code text default null,
  country text default null,
  phone text default null,
  is_default boolean default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  owner_id bigint := (core.signed_in_user(lock_row => true)).id;
  current_row core.addresses;
  new_kind text;
  new_default boolean;
  updated core.addresses;
begin
  select * into current_row from core.addresses as a
  where a.id = update_address.id and a.user_id = owner_id
  for update;
  if not found then
    perform core.address_not_found(update_address.id);
  end if;

  new_kind := core.address_kind(coalesce(update_address.kind, current_row.kind));
  new_default := coalesce(update_address.is_default, current_row.is_default);
  if new_default then
    update core.addresses as a set is_default = false
    where a.user_id = owner_id and a.kind = new_kind and a.is_default and a.id <> current_row.id;
  end if;

  update core.addresses as a
  set kind = new_kind,
    is_default = new_default,
    full_name = coalesce(core.address_field('full_name', update_address.full_name, true, 200), a.full_name),
    line1 = coalesce(core.address_field('line1', update_address.line1, true, 200), a.line1),
    city = coalesce(core.address_field('city', update_address.city, true, 100), a.city),
    postal_code = coalesce(core.address_field('postal_code', update_address.postal_code, true, 20), a.postal_code),
    country = coalesce(core.address_country(update_address.country), a.country),
    line2 = coalesce(core.address_field('line2', update_address.line2, false, 200), a.line2),
    region = coalesce(core.address_field('region', update_address.region, false, 100), a.region),
    phone = coalesce(core.address_field('phone', update_address.phone, false, 40), a.phone)
  where a.id = current_row.id
  returning * into updated;

  return core.address_json(updated);
end;
$$;

comment on function api.update_address(bigint, text, text, text, text, text, text, text, text, text, boolean) is
'Changes fields of one of the signed-in user''s addresses (omitted or null fields stay; send "" to clear
line2, region or phone) and returns it. is_default true makes it the default of its kind, clearing the
previous one. Another user''s address and a missing one give the same 404 {"code":"not_found"}.
@route PATCH /me/addresses/{id}';

grant execute on function api.update_address(bigint, text, text, text, text, text, text, text, text, text, boolean)
to app_readwrite, app_admin;

create or replace function api.delete_address(id bigint) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  deleted_id bigint;
begin
  delete from core.addresses as a
  where a.id = delete_address.id and a.user_id = core.current_user_id()
  returning a.id into deleted_id;
  if deleted_id is null then
    perform core.address_not_found(delete_address.id);
  end if;
  perform pg_catalog.set_config('response.status', '204', true);
  return null;
end;
$$;

comment on function api.delete_address(bigint) is
'Deletes one of the signed-in user''s addresses: 204 No Content, as PostgREST answers a DELETE. Deleting
the default leaves that kind without a default. Another user''s address and a missing one give the same
404 {"code":"not_found"}.
@route DELETE /me/addresses/{id}';

grant execute on function api.delete_address(bigint) to app_readwrite, app_admin;

commit;
