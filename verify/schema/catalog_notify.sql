-- Verify commercecore:schema/catalog_notify on pg
begin;

select 1 / (count(*) = 3)::int
from pg_catalog.pg_trigger
where
  not tgisinternal
  and tgenabled <> 'D'
  and tgname in ('products_notify_update', 'products_notify_change', 'categories_notify_change');

select 'core.notify_product_update()'::regprocedure, 'core.notify_catalog_change()'::regprocedure;

rollback;
