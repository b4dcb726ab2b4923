-- Verify commercecore:procedures/addresses on pg
begin;

select id, kind, is_default, full_name, line1, line2, city, region, postal_code, country, phone, created_at, updated_at
from api.addresses where false;

select 1 / has_table_privilege('app_readwrite', 'api.addresses', 'select')::int;
select 1 / (not has_table_privilege('app_readonly', 'api.addresses', 'select'))::int;
select 1 / has_function_privilege(
  'app_readwrite', 'api.create_address(text, text, text, text, text, text, text, text, text, boolean)', 'execute'
)::int;
select 1 / has_function_privilege(
  'app_admin', 'api.update_address(bigint, text, text, text, text, text, text, text, text, text, boolean)', 'execute'
)::int;
select 1 / has_function_privilege('app_readwrite', 'api.delete_address(bigint)', 'execute')::int;
select 1 / (core.address_country(' de ') = 'DE')::int;
select 1 / (not core.is_country_code('XX'))::int;

-- a second default of the same kind takes over from the first
insert into core.users (email) values ('verify-addresses@example.com');
select set_config('request.jwt.claims', jsonb_build_object('sub', id::text)::text, true)
from core.users where email = 'verify-addresses@example.com';
select api.create_address('shipping', 'A', '1 Road', 'Town', '1000', 'de', is_default => true);
select api.create_address('shipping', 'B', '2 Road', 'Town', '1000', 'FR', is_default => true);
select 1 / (count(*) = 1 and bool_and(full_name = 'B'))::int from api.addresses where is_default;

rollback;
