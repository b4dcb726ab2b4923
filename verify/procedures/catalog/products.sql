-- Verify commercecore:procedures/catalog/products on pg
begin;

select set_config('role', 'app_admin', true);
select set_config('request.jwt.claims', '{"role": "app_admin"}', true);
select set_config('verify.id', (api.create_product(sku => 'VERIFY-NEW', name => 'new', price_minor => 100, stock => 7) ->> 'id'), true);
select 1 / ((api.update_product(id => current_setting('verify.id')::bigint, price_minor => 250) ->> 'price_minor') = '250')::int;
select 1 / ((api.update_product(id => current_setting('verify.id')::bigint, max_per_customer => 3) ->> 'max_per_customer') = '3')::int;
-- flash-sale mode: the stock shown stays the total, staff see the shards
select 1 / ((api.update_product(id => current_setting('verify.id')::bigint, stock_shards => 4) ->> 'stock_shards') = '4')::int;
select 1 / ((api.get_product(current_setting('verify.id')::bigint) ->> 'stock') = '7')::int;
do $$
begin
  perform api.update_product(id => current_setting('verify.id')::bigint, stock_shards => 100000);
  raise exception 'stock_shards above the maximum was accepted';
exception when sqlstate 'PT422' then
  null;
end;
$$;
reset role;

-- the initial stock is the product's first ledger row; the split into shards moved it, the total the same
select 1 / (sum(delta) = 7 and count(*) filter (where reason = 'restock') = 1)::int
from core.inventory_movements where product_id = current_setting('verify.id')::bigint;

select 1 / has_function_privilege(
  'app_admin', 'api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer)', 'execute'
)::int;
select 1 / (not has_function_privilege(
  'app_readwrite', 'api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer)', 'execute'
))::int;
select 1 / has_function_privilege(
  'app_admin', 'api.update_product(bigint, text, text, text, bigint, text, bigint, boolean, bigint, integer, text[], integer)', 'execute'
)::int;

rollback;
