-- Deploy commercecore:views/products to pg
-- requires: schema/catalog
-- requires: schema/stock_shards
-- The public catalog: active products without internal fields (api.categories is unchanged). The view keeps the
-- column filters PostgREST clients send (id, category_id, price_minor, sku, created_at, currency) on the
-- partial indexes of core.products (schema/catalog): its only own condition is `active`, which every one of
-- those indexes carries. Its comment declares what the costly parts of the dialect may use (@pattern, @order
-- lines): prefix patterns on name and sku run on their text_pattern_ops indexes (schema/catalog).
begin;

set local role app_owner;

-- stock is now the shards' sum for a product in flash-sale mode: the same column, of the same type
create or replace view api.products with (security_barrier) as
select
  p.id,
  p.sku,
  p.name,
  p.description,
  p.price_minor,
  p.currency,
  case when p.stock_shards = 1 then p.stock else (
    select coalesce(sum(s.units), 0)::integer from core.stock_shards as s where s.product_id = p.id
  ) end as stock,
  p.category_id,
  p.created_at,
  p.updated_at
from core.products as p
where p.active
-- a security_barrier view is planned on its own, so an outer `order by id limit M` could not reach an index:
-- ordered by id here, keyset pages (`id > N order by id limit M`) are an index range scan that stops after M
order by p.id;

comment on view api.products is
'The public catalog: active products only, without the purchase cost or the search vector.
Filter, order and page it in PostgREST style; keyset pagination (`id=gt.N&order=id&limit=M`) and the
filters on category_id, price_minor, sku and created_at run on indexes. Pattern filters (like, ilike,
match, imatch) take name and sku, anchored at the start (`name=ilike.earl*`); order= takes the columns
below. For ranked full-text search use `search_products`.
@route GET /products
@pattern name, sku
@order id, sku, name, price_minor, created_at';
comment on column api.products.price_minor is 'Unit price in minor units of currency (cents).';
comment on column api.products.currency is 'ISO 4217 code, upper case.';
comment on column api.products.stock is 'Units on hand (of a product in flash-sale mode: the sum of its shards).';

grant select on api.products to app_readonly, app_readwrite, app_admin;

commit;
