-- Deploy commercecore:procedures/addresses/fields to pg
-- requires: schema/users
-- requires: procedures/errors
-- The fields of an address, each trimmed and checked with an error naming it, the country against ISO
-- 3166-1, the address shape of the API, and the one 404 for an address that is missing or another user's.
begin;

set local role app_owner;

create or replace function core.is_country_code(code text) returns boolean
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

create or replace function core.address_field(field text, value text, required boolean, max_length integer)
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

create or replace function core.address_kind(kind text) returns text
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

create or replace function core.address_country(country text) returns text
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

create or replace function core.address_json(a core.addresses) returns jsonb
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

create or replace function core.address_not_found(id bigint) returns void
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

commit;
