-- Verify commercecore:procedures/catalog/movements on pg
begin;

select 1 / has_function_privilege('app_admin', 'api.product_movements(bigint, bigint, integer)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.product_movements(bigint, bigint, integer)', 'execute'))::int;
select 1 / (not has_function_privilege('app_readonly', 'api.product_movements(bigint, bigint, integer)', 'execute'))::int;

-- three movements, read two at a time: the newest two, then the oldest one
insert into core.products (sku, name, price_minor, currency) values ('VERIFY-LEDGER', 'ledger', 100, 'EUR');
insert into core.inventory_movements (product_id, delta, reason)
select p.id as product_id, d.delta, 'restock' as reason
from core.products as p cross join (values (5), (3), (2)) as d (delta)
where p.sku = 'VERIFY-LEDGER';
select set_config('verify.product', id::text, true) from core.products where sku = 'VERIFY-LEDGER';
select set_config('role', 'app_admin', true);
select set_config('request.jwt.claims', '{"role": "app_admin"}', true);
select set_config('verify.last', min(m.id)::text, true)
from api.product_movements(current_setting('verify.product')::bigint, page_size => 2) as m;
select 1 / (count(*) = 1 and min(m.delta) = 5)::int
from api.product_movements(
  current_setting('verify.product')::bigint, before_id => current_setting('verify.last')::bigint, page_size => 2
) as m;

rollback;
