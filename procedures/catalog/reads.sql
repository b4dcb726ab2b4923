-- Deploy commercecore:procedures/catalog/reads to pg
-- requires: schema/catalog
-- requires: procedures/errors
-- requires: schema/stock_shards
-- One product: the product shape of the API, and GET /products/{id} (inactive products are staff's
-- alone). stock is the units on hand: products.stock, or for a product in flash-sale mode the sum of its
-- shards; staff also see stock_shards.
begin;

set local role app_owner;

create or replace function core.product_json(product_id bigint, include_private boolean default false)
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
      'stock', case when p.stock_shards = 1 then p.stock else (
        select coalesce(sum(s.units), 0)::integer from core.stock_shards as s where s.product_id = p.id
      ) end,
      'category_id', p.category_id,
      'active', p.active,
      'max_per_customer', p.max_per_customer,
      'created_at', p.created_at,
      'updated_at', p.updated_at
    )
    || case
      when product_json.include_private then jsonb_build_object('cost_minor', p.cost_minor, 'stock_shards', p.stock_shards)
      else '{}'
    end
  from core.products as p
  where p.id = product_json.product_id
$$;

comment on function core.product_json(bigint, boolean) is
'The product shape of the API (docs/http-api.md section 6) for one product, with active and max_per_customer
(the units one customer may hold in unpaid orders; null: the shop''s default); stock is the units on hand
(in flash-sale mode the sum of the shards); include_private adds the staff-only cost_minor and stock_shards.
Null when the product does not exist.';

create or replace function api.get_product(id bigint)
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
  return core.product_json(get_product.id, staff);
end;
$$;

comment on function api.get_product(bigint) is
'One product of the catalog: {id, sku, name, description, price_minor, currency, stock, category_id,
active, max_per_customer, created_at, updated_at}. Inactive products are 404 except for staff, who also get
cost_minor and stock_shards (the flash-sale mode: 1 is off).
Errors: 404 not_found.
@route GET /products/{id}';

grant execute on function api.get_product(bigint) to app_readonly, app_readwrite, app_admin;

commit;
