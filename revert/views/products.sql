-- Revert commercecore:views/products from pg
begin;

drop function api.get_product(bigint);
drop function core.product_document(bigint, boolean);
drop view api.categories;
drop index core.products_active_sku_pattern_idx;
drop index core.products_active_name_pattern_idx;
drop index core.products_active_created_at_idx;
drop index core.products_active_currency_id_idx;
drop view api.products;

commit;
