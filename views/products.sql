-- Deploy commercecore:views/products to pg
-- requires: schema/catalog
-- requires: schema/errors
-- The public catalog: active products without internal fields, and one product by id. The view keeps the
-- column filters PostgREST clients send (id, category_id, price_minor, sku, created_at) on the partial
-- indexes of core.products: its only own condition is `active`, which every one of those indexes carries.
-- Its comment declares what the costly parts of the dialect may use (@pattern, @order lines): prefix
-- patterns on name and sku run on their text_pattern_ops indexes below.
begin;

set local role app_owner;

create view api.products with (security_barrier) as
select
  p.id,
  p.sku,
  p.name,
  p.description,
  p.price_minor,
  p.currency,
  p.stock,
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
comment on column api.products.stock is 'Units on hand.';

grant select on api.products to app_readonly, app_readwrite, app_admin;

-- filters of api.products that the indexes of schema/catalog do not cover: a currency (a multi-currency
-- storefront shows one), keyset-paged by id; created_at ranges ("new arrivals"). Neither column changes
-- with stock, so stock moves stay HOT updates.
create index products_active_currency_id_idx on core.products (currency, id) where active;
comment on index core.products_active_currency_id_idx is 'api.products filtered by currency, in id order.';
create index products_active_created_at_idx on core.products (created_at, id) where active;
comment on index core.products_active_created_at_idx is 'api.products filtered by a created_at range.';
-- pattern filters of api.products (@pattern): the gateway adds the byte range of the pattern's prefix
-- (`name ~>=~ 'Ear' and name ~<~ 'Eas'`), whose leakproof operators reach these indexes through the
-- security barrier; byte order, whatever the database's collation
create index products_active_name_pattern_idx on core.products (name text_pattern_ops) where active;
comment on index core.products_active_name_pattern_idx is 'api.products: prefix patterns on name.';
create index products_active_sku_pattern_idx on core.products (sku text_pattern_ops) where active;
comment on index core.products_active_sku_pattern_idx is 'api.products: prefix patterns on sku.';

create view api.categories with (security_barrier) as
select
  c.id,
  c.slug,
  c.name,
  c.description,
  c.parent_id,
  c.created_at,
  c.updated_at
from core.categories as c
order by c.id;

comment on view api.categories is
'The catalog''s categories; parent_id nests them (null for a top-level category).
@route GET /categories
@pattern slug, name
@order id, slug, name';

grant select on api.categories to app_readonly, app_readwrite, app_admin;

create function core.product_document(product_id bigint, include_private boolean default false)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select
    jsonb_build_object(
      'id', p.id,
      'sku', p.sku,
      'name', p.name,
      'description', p.description,
      'price_minor', p.price_minor,
      'currency', p.currency,
      'stock', p.stock,
      'category_id', p.category_id,
      'active', p.active,
      'max_per_customer', p.max_per_customer,
      'created_at', p.created_at,
      'updated_at', p.updated_at
    )
    || case when product_document.include_private then jsonb_build_object('cost_minor', p.cost_minor) else '{}' end
  from core.products as p
  where p.id = product_document.product_id
$$;

comment on function core.product_document(bigint, boolean) is
'The product shape of the API (docs/http-api.md section 6) for one product, with active and max_per_customer
(the units one customer may hold in unpaid orders; null: the shop''s default); include_private adds the
staff-only cost_minor. Null when the product does not exist.';

create function api.get_product(id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  staff boolean := core.is_admin();
begin
  if not exists (
    select from core.products as p where p.id = get_product.id and (p.active or staff)
  ) then
    perform core.raise_not_found('product', get_product.id, 'List the catalog with GET /products.');
  end if;
  return core.product_document(get_product.id, staff);
end;
$$;

comment on function api.get_product(bigint) is
'One product of the catalog: {id, sku, name, description, price_minor, currency, stock, category_id,
active, max_per_customer, created_at, updated_at}. Inactive products are 404 except for staff, who also get cost_minor.
Errors: 404 not_found.
@route GET /products/{id}';

grant execute on function api.get_product(bigint) to app_readonly, app_readwrite, app_admin;

commit;
