-- Deploy commercecore:views/addresses to pg
-- requires: procedures/addresses/endpoints
-- GET /me/addresses: the signed-in user's addresses, read through api.my_addresses
-- (procedures/addresses/endpoints), since the row-level security policies call core functions that the request
-- roles may not execute.
begin;

set local role app_owner;

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

commit;
