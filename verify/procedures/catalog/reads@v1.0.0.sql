-- Verify commercecore:procedures/catalog/reads on pg
begin;

insert into core.products (sku, name, price_minor, active) values
('VERIFY-ON', 'verify on', 100, true), ('VERIFY-OFF', 'verify off', 100, false);

-- get_product: inactive products are not found for customers, visible to staff (with cost)
select set_config('verify.on_id', id::text, true) from core.products where sku = 'VERIFY-ON';
select set_config('verify.off_id', id::text, true) from core.products where sku = 'VERIFY-OFF';
select set_config('role', 'app_readwrite', true);
select 1 / (api.get_product(current_setting('verify.on_id')::bigint) ->> 'sku' = 'VERIFY-ON')::int;
select 1 / (not api.get_product(current_setting('verify.on_id')::bigint) ? 'cost_minor')::int;
do $$
begin
  perform api.get_product(current_setting('verify.off_id')::bigint);
  raise exception 'a customer found an inactive product';
exception when sqlstate 'PT404' then
  null;
end;
$$;
select set_config('role', 'app_admin', true);
select 1 / (api.get_product(current_setting('verify.off_id')::bigint) ->> 'active' = 'false')::int;
select 1 / (api.get_product(current_setting('verify.off_id')::bigint) ? 'cost_minor')::int;
reset role;

select 1 / has_function_privilege('app_readonly', 'api.get_product(bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'core.product_json(bigint, boolean)', 'execute'))::int;

rollback;
