-- Verify commercecore:procedures/catalog/stock on pg
begin;

insert into core.products (sku, name, price_minor) values ('VERIFY-STOCK', 'stock', 100);
select set_config('verify.id', id::text, true) from core.products where sku = 'VERIFY-STOCK';

select set_config('role', 'app_admin', true);
select set_config('request.jwt.claims', '{"role": "app_admin"}', true);
select 1 / ((api.adjust_stock(current_setting('verify.id')::bigint, 7, 'restock') ->> 'stock') = '7')::int;
select 1 / ((api.adjust_stock(current_setting('verify.id')::bigint, -2, 'adjustment') ->> 'stock') = '5')::int;
reset role;

-- stock is the ledger's sum: the restock and the adjustment
select 1 / (sum(delta) = 5 and count(*) = 2)::int
from core.inventory_movements where product_id = current_setting('verify.id')::bigint;

select 1 / has_function_privilege('app_admin', 'api.adjust_stock(bigint, integer, text, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.adjust_stock(bigint, integer, text, text)', 'execute'))::int;

rollback;
