-- Verify commercecore:views/products on pg
begin;

select id, sku, name, description, price_minor, currency, stock, category_id, created_at, updated_at
from api.products where false;
select id, slug, name, description, parent_id from api.categories where false;

-- the view hides inactive products and has no cost or search column
select 1 / (count(*) = 0)::int
from information_schema.columns
where table_schema = 'api' and table_name = 'products' and column_name in ('cost_minor', 'search', 'active');

insert into core.products (sku, name, price_minor, active) values
('VERIFY-ON', 'verify on', 100, true), ('VERIFY-OFF', 'verify off', 100, false);
select 1 / (count(*) = 1)::int from api.products where sku in ('VERIFY-ON', 'VERIFY-OFF');

select 1 / has_table_privilege('app_readonly', 'api.products', 'select')::int;
select 1 / has_table_privilege('app_readonly', 'api.categories', 'select')::int;

rollback;
