-- Verify commercecore:procedures/catalog_admin on pg
begin;

select set_config('role', 'app_admin', true);
select set_config('request.jwt.claims', '{"role": "app_admin"}', true);
select set_config('verify.id', (api.create_product(sku => 'VERIFY-NEW', name => 'new', price_minor => 100, stock => 7) ->> 'id'), true);
select 1 / ((api.update_product(id => current_setting('verify.id')::bigint, price_minor => 250) ->> 'price_minor') = '250')::int;
select 1 / ((api.update_product(id => current_setting('verify.id')::bigint, max_per_customer => 3) ->> 'max_per_customer') = '3')::int;
select 1 / ((api.adjust_stock(current_setting('verify.id')::bigint, -2, 'adjustment') ->> 'stock') = '5')::int;
reset role;

-- stock is the ledger's sum: the initial restock and the adjustment
select 1 / (sum(delta) = 5 and count(*) = 2)::int
from core.inventory_movements where product_id = current_setting('verify.id')::bigint;

select 1 / has_function_privilege(
  'app_admin', 'api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer)', 'execute'
)::int;
select 1 / (not has_function_privilege(
  'app_readwrite', 'api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer)', 'execute'
))::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.adjust_stock(bigint, integer, text, text)', 'execute'))::int;
select 1 / has_function_privilege(
  'app_admin', 'api.update_product(bigint, text, text, text, bigint, text, bigint, boolean, bigint, integer, text[])', 'execute'
)::int;

rollback;
