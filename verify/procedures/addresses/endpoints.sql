-- Verify commercecore:procedures/addresses/endpoints on pg
begin;

select 1 / has_function_privilege('app_readwrite', 'api.my_addresses()', 'execute')::int;
select 1 / has_function_privilege(
  'app_readwrite', 'api.create_address(text, text, text, text, text, text, text, text, text, boolean)', 'execute'
)::int;
select 1 / has_function_privilege(
  'app_admin', 'api.update_address(bigint, text, text, text, text, text, text, text, text, text, boolean)', 'execute'
)::int;
select 1 / has_function_privilege('app_readwrite', 'api.delete_address(bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'api.delete_address(bigint)', 'execute'))::int;

-- a second default of the same kind takes over from the first
insert into core.users (email) values ('verify-addresses@example.com');
select set_config('request.jwt.claims', jsonb_build_object('sub', id::text)::text, true)
from core.users where email = 'verify-addresses@example.com';
select api.create_address('shipping', 'A', '1 Road', 'Town', '1000', 'de', is_default => true);
select api.create_address('shipping', 'B', '2 Road', 'Town', '1000', 'FR', is_default => true);
select 1 / (count(*) = 1 and bool_and(full_name = 'B'))::int from api.my_addresses() where is_default;

rollback;
