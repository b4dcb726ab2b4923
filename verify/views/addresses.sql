-- Verify commercecore:views/addresses on pg
begin;

select id, kind, is_default, full_name, line1, line2, city, region, postal_code, country, phone, created_at, updated_at
from api.addresses where false;

select 1 / has_table_privilege('app_readwrite', 'api.addresses', 'select')::int;
select 1 / has_table_privilege('app_admin', 'api.addresses', 'select')::int;
select 1 / (not has_table_privilege('app_readonly', 'api.addresses', 'select'))::int;

-- the view shows the signed-in user's addresses only
insert into core.users (email) values ('verify-addresses-a@example.com'), ('verify-addresses-b@example.com');
insert into core.addresses (user_id, kind, full_name, line1, city, postal_code, country)
select id as user_id, 'shipping' as kind, 'A' as full_name, '1 Road' as line1, 'Town' as city, '1000' as postal_code, 'DE' as country
from core.users where email = 'verify-addresses-a@example.com';
select set_config('request.jwt.claims', jsonb_build_object('sub', id::text)::text, true)
from core.users where email = 'verify-addresses-b@example.com';
select 1 / (count(*) = 0)::int from api.addresses;

rollback;
