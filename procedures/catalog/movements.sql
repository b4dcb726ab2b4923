-- Deploy commercecore:procedures/catalog/movements to pg
-- requires: schema/catalog
-- requires: procedures/guards
-- Staff: GET /products/{product_id}/movements, the stock ledger of one product, newest first, a keyset page
-- at a time. The page is cut here, on the ledger's (product_id, id) index, so that a page deep in a long
-- ledger reads only its own rows: the read dialect of the gateway (select=, filters) then applies to it.
begin;

set local role app_owner;

create or replace function core.movements_page_max() returns integer
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(pg_catalog.current_setting('commercecore.movements_page_max', true), '')::integer, 1000)
$$;

comment on function core.movements_page_max() is
'The largest page of GET /products/{product_id}/movements: the setting commercecore.movements_page_max
(ALTER DATABASE ... SET, or per role), 1000 by default.';

create or replace function api.product_movements(
  product_id bigint, before_id bigint default null, page_size integer default 100
)
returns table (
  id bigint, delta integer, reason text, order_id bigint, actor_user_id bigint, note text, created_at timestamptz
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  page_max integer := core.movements_page_max();
  movement record;
  rows_returned integer := 0;
  last_id bigint;
begin
  perform core.require_staff('Only staff may read the stock ledger.');
  if product_movements.page_size is null or product_movements.page_size not between 1 and page_max then
    perform core.raise_invalid(
      'page_size', pg_catalog.format('page_size must be between 1 and %s.', page_max),
      pg_catalog.jsonb_build_object('min', 1, 'max', page_max, 'value', product_movements.page_size),
      'Ask for a smaller page, and for the next one with before_id.'
    );
  end if;
  if not exists (select from core.products as p where p.id = product_movements.product_id) then
    perform core.raise_not_found('product', product_movements.product_id, 'List the catalog with GET /products.');
  end if;
  for movement in
    select m.id, m.delta, m.reason, m.order_id, m.actor_user_id, m.note, m.created_at
    from core.inventory_movements as m
    -- one range condition whether before_id is given or not, so that even a generic plan of this query
    -- starts its index scan at before_id instead of filtering its way down from the newest movement
    where
      m.product_id = product_movements.product_id
      and m.id < coalesce(product_movements.before_id, 9223372036854775807)
    order by m.id desc
    limit product_movements.page_size
  loop
    id := movement.id;
    delta := movement.delta;
    reason := movement.reason;
    order_id := movement.order_id;
    actor_user_id := movement.actor_user_id;
    note := movement.note;
    created_at := movement.created_at;
    rows_returned := rows_returned + 1;
    last_id := movement.id;
    return next;
  end loop;
  if rows_returned = product_movements.page_size then
    -- a full page may have a next one: where it starts
    perform pg_catalog.set_config(
      'response.headers',
      pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('Link', pg_catalog.format(
        '</products/%s/movements?before_id=%s&page_size=%s>; rel="next"',
        product_movements.product_id, last_id, product_movements.page_size
      )))::text,
      true
    );
  end if;
end;
$$;

comment on function api.product_movements(bigint, bigint, integer) is
'Staff: the stock ledger of a product, newest first: each movement''s id, delta (units added, or taken when
negative), reason (restock, adjustment, correction, order, order_change, order_cancel, order_expired),
order_id, actor_user_id, note and created_at. A keyset page of page_size movements (1 to
commercecore.movements_page_max, 1000 by default; 100 when omitted) older than before_id; a full page
answers a Link header (rel="next") with the next page''s before_id, the id of its last movement. The read
dialect (select=, filters) applies to the page.
Errors: 401 unauthenticated, 403 forbidden (customers); 404 not_found (product); 422 invalid_input
(page_size, with min and max).
@route GET /products/{product_id}/movements';

grant execute on function api.product_movements(bigint, bigint, integer) to app_admin;

commit;
