-- Verify commercecore:procedures/catalog/search on pg
begin;

insert into core.products (sku, name, description, price_minor) values
('VERIFY-LAMP', 'Verifylamp', 'a desk light', 1000),
('VERIFY-DESK', 'Desk', 'goes well with a verifylamp', 5000);

-- a name match ranks above a description match
select 1 / (array_agg(sku order by ordinality) = '{VERIFY-LAMP,VERIFY-DESK}')::int
from api.search_products(q => 'verifylamp') with ordinality;
select 1 / (count(*) = 1)::int from api.search_products(q => 'verifylamp', min_price => 2000);

select 1 / has_function_privilege(
  'app_readonly', 'api.search_products(text, bigint, bigint, bigint, boolean, integer, integer)', 'execute'
)::int;

rollback;
