-- Verify commercecore:views/products on pg
begin;

select id, sku, name, description, price_minor, currency, stock, category_id, created_at, updated_at
from api.products where false;
select id, slug, name, description, parent_id from api.categories where false;

-- the view hides inactive products and has no cost or search column
select 1 / (count(*) = 0)::int
from information_schema.columns
where table_schema = 'api' and table_name = 'products' and column_name in ('cost_minor', 'search', 'active');

-- the prefix-pattern indexes of the declared @pattern columns
select 1 / (count(*) = 2)::int
from pg_catalog.pg_indexes
where
  schemaname = 'core'
  and indexname in ('products_active_name_pattern_idx', 'products_active_sku_pattern_idx');

insert into core.products (sku, name, price_minor, active) values
('VERIFY-ON', 'verify on', 100, true), ('VERIFY-OFF', 'verify off', 100, false);
select 1 / (count(*) = 1)::int from api.products where sku in ('VERIFY-ON', 'VERIFY-OFF');

-- get_product: inactive products are not found for customers, visible to staff (with cost)
select set_config('verify.on_id', id::text, true) from core.products where sku = 'VERIFY-ON';
select set_config('verify.off_id', id::text, true) from core.products where sku = 'VERIFY-OFF';
select set_config('role', 'app_readwrite', true);
select 1 / (api.get_product(current_setting('verify.on_id')::bigint) ->> 'sku' = 'VERIFY-ON')::int;
select 1 / (not api.get_product(current_setting('verify.on_id')::bigint) ? 'cost_minor')::int;
select set_config('role', 'app_admin', true);
select 1 / (api.get_product(current_setting('verify.off_id')::bigint) ->> 'active' = 'false')::int;
select 1 / (api.get_product(current_setting('verify.off_id')::bigint) ? 'cost_minor')::int;
reset role;

select 1 / has_table_privilege('app_readonly', 'api.products', 'select')::int;
select 1 / has_table_privilege('app_readonly', 'api.categories', 'select')::int;
select 1 / has_function_privilege('app_readonly', 'api.get_product(bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'core.product_document(bigint, boolean)', 'execute'))::int;

rollback;
