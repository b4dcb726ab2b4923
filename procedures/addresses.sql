-- Deploy commercecore:procedures/addresses to pg
-- requires: schema/users
-- requires: schema/errors
-- The signed-in user's addresses: GET|POST /me/addresses, PATCH|DELETE /me/addresses/{id}.
-- At most one default address per kind: making one default clears the previous default in the same
-- transaction, under a lock on the user's row, so concurrent requests queue instead of colliding on the
-- unique index addresses_one_default_per_kind. Lock order: the user's row, then address rows.
begin;

set local role app_owner;

create function core.is_country_code(code text) returns boolean
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select is_country_code.code = any ('{
    AD,AE,AF,AG,AI,AL,AM,AO,AQ,AR,AS,AT,AU,AW,AX,AZ,BA,BB,BD,BE,BF,BG,BH,BI,BJ,BL,BM,BN,BO,BQ,BR,BS,BT,BV,BW,BY,BZ,
    CA,CC,CD,CF,CG,CH,CI,CK,CL,CM,CN,CO,CR,CU,CV,CW,CX,CY,CZ,DE,DJ,DK,DM,DO,DZ,EC,EE,EG,EH,ER,ES,ET,FI,FJ,FK,FM,FO,FR,
    GA,GB,GD,GE,GF,GG,GH,GI,GL,GM,GN,GP,GQ,GR,GS,GT,GU,GW,GY,HK,HM,HN,HR,HT,HU,ID,IE,IL,IM,IN,IO,IQ,IR,IS,IT,
    JE,JM,JO,JP,KE,KG,KH,KI,KM,KN,KP,KR,KW,KY,KZ,LA,LB,LC,LI,LK,LR,LS,LT,LU,LV,LY,
    MA,MC,MD,ME,MF,MG,MH,MK,ML,MM,MN,MO,MP,MQ,MR,MS,MT,MU,MV,MW,MX,MY,MZ,NA,NC,NE,NF,NG,NI,NL,NO,NP,NR,NU,NZ,OM,
    PA,PE,PF,PG,PH,PK,PL,PM,PN,PR,PS,PT,PW,PY,QA,RE,RO,RS,RU,RW,
    SA,SB,SC,SD,SE,SG,SH,SI,SJ,SK,SL,SM,SN,SO,SR,SS,ST,SV,SX,SY,SZ,TC,TD,TF,TG,TH,TJ,TK,TL,TM,TN,TO,TR,TT,TV,TW,TZ,
    UA,UG,UM,US,UY,UZ,VA,VC,VE,VG,VI,VN,VU,WF,WS,XK,YE,YT,ZA,ZM,ZW
  }'::text [])
$$;

comment on function core.is_country_code(text) is
'True for the 249 ISO 3166-1 alpha-2 codes in upper case, and XK (Kosovo, user-assigned but used by
payment providers and carriers).';

create function core.address_field(field text, value text, required boolean, max_length integer)
returns text
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  trimmed text := pg_catalog.btrim(address_field.value);
begin
  if trimmed is null then
    return null;  -- absent: the caller decides (create: required fields are coalesced to '' first)
  end if;
  if address_field.required and trimmed = '' then
    perform core.raise_invalid(
      address_field.field, pg_catalog.format('The address field %s is required.', address_field.field),
      pg_catalog.jsonb_build_object('reason', 'missing'),
      pg_catalog.format('Send a non-empty %s.', address_field.field)
    );
  end if;
  if pg_catalog.length(trimmed) > address_field.max_length then
    perform core.raise_invalid(
      address_field.field, pg_catalog.format('The address field %s is too long.', address_field.field),
      pg_catalog.jsonb_build_object('reason', 'too_long', 'max_length', address_field.max_length),
      pg_catalog.format('Send at most %s characters.', address_field.max_length)
    );
  end if;
  return trimmed;
end;
$$;

comment on function core.address_field(text, text, boolean, integer) is
'Trims an address field and checks it (required: not empty; maximum length), raising PT422 with the
field''s name. Null stays null: for an update it means "unchanged".';

create function core.address_kind(kind text) returns text
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  normalized text := pg_catalog.lower(pg_catalog.btrim(address_kind.kind));
begin
  if normalized is null or normalized not in ('shipping', 'billing') then
    perform core.raise_invalid(
      'kind', 'The address kind must be shipping or billing.',
      pg_catalog.jsonb_build_object('allowed', pg_catalog.jsonb_build_array('shipping', 'billing')),
      'Send kind "shipping" or "billing".'
    );
  end if;
  return normalized;
end;
$$;

comment on function core.address_kind(text) is 'Validates an address kind (shipping, billing), or raises PT422 field "kind".';

create function core.address_country(country text) returns text
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  normalized text := pg_catalog.upper(pg_catalog.btrim(address_country.country));
begin
  if normalized is null then
    return null;  -- absent: unchanged for an update; create sends '' instead
  end if;
  if not core.is_country_code(normalized) then
    perform core.raise_invalid(
      'country', 'The country is not an ISO 3166-1 alpha-2 code.',
      pg_catalog.jsonb_build_object('value', address_country.country),
      'Send a two-letter country code such as DE, FR or US.'
    );
  end if;
  return normalized;
end;
$$;

comment on function core.address_country(text) is
'Upper-cases and validates a country code (ISO 3166-1 alpha-2), or raises PT422 field "country". Null
stays null.';

create function core.address_json(a core.addresses) returns jsonb
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'id', a.id,
    'kind', a.kind,
    'is_default', a.is_default,
    'full_name', a.full_name,
    'line1', a.line1,
    'line2', a.line2,
    'city', a.city,
    'region', a.region,
    'postal_code', a.postal_code,
    'country', a.country,
    'phone', a.phone,
    'created_at', a.created_at,
    'updated_at', a.updated_at
  )
$$;

comment on function core.address_json(core.addresses) is 'The address shape of the API: the columns of api.addresses.';

create function core.address_not_found(id bigint) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- the same error for a missing address and for another user's: existence is never revealed
  perform core.raise_not_found(
    'address', address_not_found.id, 'List your addresses with GET /me/addresses.',
    message => 'Address not found.'
  );
end;
$$;

comment on function core.address_not_found(bigint) is 'Raises PT404 {"code":"not_found","resource":"address","id":...}.';

create function core.lock_address_owner() returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  owner_id bigint;
begin
  -- serialises the default-address changes of one user (and only theirs); FOR NO KEY UPDATE does not
  -- block foreign-key checks of new orders that reference the user
  select u.id into owner_id from core.users as u where u.id = core.current_user_id() for no key update;
  if owner_id is null then
    perform core.raise_error(
      '401', 'not_authenticated', 'You are not signed in.',
      hint => 'Sign in, then send the session cookie or an Authorization: Bearer token.'
    );
  end if;
  return owner_id;
end;
$$;

comment on function core.lock_address_owner() is
'Locks the signed-in user''s row (FOR NO KEY UPDATE) and returns its id, or raises PT401.';

create function api.my_addresses()
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

create view api.addresses with (security_barrier) as
select
  a.id, a.kind, a.is_default, a.full_name, a.line1, a.line2, a.city, a.region, a.postal_code, a.country,
  a.phone, a.created_at, a.updated_at
from api.my_addresses() as a;

comment on view api.addresses is
'The signed-in user''s shipping and billing addresses; at most one default of each kind.
@route GET /me/addresses
@order id, kind, created_at';
comment on column api.addresses.kind is 'shipping or billing.';
comment on column api.addresses.is_default is 'The default address of its kind (at most one per kind).';
comment on column api.addresses.country is 'ISO 3166-1 alpha-2 code, upper case.';

grant select on api.addresses to app_readwrite, app_admin;

create function api.create_address(
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
  owner_id bigint := core.lock_address_owner();
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

create function api.update_address(
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
  owner_id bigint := core.lock_address_owner();
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

create function api.delete_address(id bigint) returns jsonb
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
