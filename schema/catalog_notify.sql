-- Deploy commercecore:schema/catalog_notify to pg
-- requires: schema/catalog
-- Tells running gateways that the public catalog changed, so that their catalog caches stay true whoever
-- wrote (the API, psql, a job): statement-level triggers on core.products and core.categories send NOTIFY
-- commercecore_catalog, delivered when the transaction commits. A change of what the catalog shows (a product
-- added or removed; its sku, name, description, price, currency, category, active flag or per-customer
-- limit; any change of a category) sends '<table>:change', and the gateways empty their caches. An update
-- that moves nothing else than stock and the updated_at stamp (every order, through the ledger) sends
-- 'products:stock', which the gateways coalesce: pages showing stock are refreshed within their staleness
-- bound (COMMERCECORE_CATALOG_STALENESS) instead of on every order. Identical notifications of one
-- transaction are delivered once.
begin;

set local role app_owner;

create function core.notify_catalog_change() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_catalog.pg_notify('commercecore_catalog', tg_table_name || ':change');
  return null;
end;
$$;

comment on function core.notify_catalog_change() is
'Trigger: NOTIFY commercecore_catalog ''<table>:change'' after a statement added, removed or changed rows of
the catalog.';

create function core.notify_product_update() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- the transition tables hold the rows of this statement only: one row per ledger movement of an order
  if exists (
    select
    from old_rows as o
    inner join new_rows as n on o.id = n.id
    where
      (o.sku, o.name, o.description, o.price_minor, o.currency, o.category_id, o.active, o.max_per_customer)
      is distinct from
      (n.sku, n.name, n.description, n.price_minor, n.currency, n.category_id, n.active, n.max_per_customer)
  ) then
    perform pg_catalog.pg_notify('commercecore_catalog', 'products:change');
  elsif exists (select from new_rows) then
    perform pg_catalog.pg_notify('commercecore_catalog', 'products:stock');
  end if;
  return null;
end;
$$;

comment on function core.notify_product_update() is
'Trigger: NOTIFY commercecore_catalog after an update of products: ''products:change'' when a column the
catalog shows changed (stock and updated_at aside), else ''products:stock''.';

create trigger products_notify_update after update on core.products
referencing old table as old_rows new table as new_rows
for each statement execute function core.notify_product_update();

comment on trigger products_notify_update on core.products is
'Tells the gateways'' catalog caches whether an update changed the catalog or moved only stock.';

create trigger products_notify_change after insert or delete or truncate on core.products
for each statement execute function core.notify_catalog_change();

comment on trigger products_notify_change on core.products is
'Empties the gateways'' catalog caches when products are added or removed.';

create trigger categories_notify_change after insert or update or delete or truncate on core.categories
for each statement execute function core.notify_catalog_change();

comment on trigger categories_notify_change on core.categories is
'Empties the gateways'' catalog caches when a category is added, changed or removed.';

commit;
