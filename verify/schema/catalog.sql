-- Verify commercecore:schema/catalog on pg
begin;

select id, slug, name, parent_id from core.categories where false;
select id, sku, name, price_minor, currency, stock, category_id, active, cost_minor, max_per_customer, search
from core.products where false;
select id, product_id, delta, reason, order_id from core.inventory_movements where false;

-- the indexes of api.products' filters, and the prefix-pattern indexes of its declared @pattern columns
select 1 / (count(*) = 4)::int
from pg_catalog.pg_indexes
where
  schemaname = 'core'
  and indexname in (
    'products_active_currency_id_idx', 'products_active_created_at_idx',
    'products_active_name_pattern_idx', 'products_active_sku_pattern_idx'
  );

-- stock follows the ledger
insert into core.products (sku, name, price_minor) values ('VERIFY-1', 'verify', 100);
insert into core.inventory_movements (product_id, delta, reason)
select id as product_id, 5 as delta, 'restock' as reason from core.products where sku = 'VERIFY-1';
select 1 / (stock = 5)::int from core.products where sku = 'VERIFY-1';

rollback;
