-- Revert commercecore:schema/catalog_notify from pg
begin;

drop trigger categories_notify_change on core.categories;
drop trigger products_notify_change on core.products;
drop trigger products_notify_update on core.products;
drop function core.notify_product_update();
drop function core.notify_catalog_change();

commit;
