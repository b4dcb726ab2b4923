-- Revert commercecore:procedures/catalog/reads from pg
-- requires: schema/catalog
-- requires: procedures/errors
-- One product: the product shape of the API, and GET /products/{id} (inactive products are staff's
-- alone).
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
      'stock', p.stock,
      'category_id', p.category_id,
      'active', p.active,
      'max_per_customer', p.max_per_customer,
      'created_at', p.created_at,
      'updated_at', p.updated_at
    )
    || case when product_json.include_private then jsonb_build_object('cost_minor', p.cost_minor) else '{}' end
  from core.products as p
  where p.id = product_json.product_id
$$;

comment on function core.product_json(bigint, boolean) is
'The product shape of the API (docs/http-api.md section 6) for one product, with active and max_per_customer
(the units one customer may hold in unpaid orders; null: the shop''s default); include_private adds the
staff-only cost_minor. Null when the product does not exist.';

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
active, max_per_customer, created_at, updated_at}. Inactive products are 404 except for staff, who also get cost_minor.
Errors: 404 not_found.
@route GET /products/{id}';

grant execute on function api.get_product(bigint) to app_readonly, app_readwrite, app_admin;

commit;
