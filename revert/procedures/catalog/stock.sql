-- Revert commercecore:procedures/catalog/stock from pg
-- requires: procedures/catalog/reads
-- requires: procedures/guards
-- Staff's stock moves: a ledger row of a given reason, never a write of products.stock (schema/catalog).
begin;

set local role app_owner;

create or replace function api.adjust_stock(id bigint, delta integer, reason text, note text default '')
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  on_hand integer;
begin
  perform core.require_staff();
  if adjust_stock.delta is null or adjust_stock.delta = 0 then
    perform core.raise_invalid(
      'delta', 'delta must be a non-zero number of units.',
      hint => 'Positive adds units, negative takes them away.'
    );
  end if;
  if adjust_stock.reason is null or adjust_stock.reason not in ('restock', 'adjustment', 'correction') then
    perform core.raise_invalid(
      'reason', 'reason must be restock, adjustment or correction.',
      jsonb_build_object('allowed', jsonb_build_array('restock', 'adjustment', 'correction')),
      'Order movements are recorded by the order functions themselves.'
    );
  end if;
  if length(adjust_stock.note) > 500 then
    perform core.raise_invalid(
      'note', 'note must be at most 500 characters.',
      jsonb_build_object('max_length', 500), 'Shorten the note.'
    );
  end if;

  select p.stock into on_hand from core.products as p where p.id = adjust_stock.id for no key update;
  if not found then
    perform core.raise_not_found('product', adjust_stock.id, 'List the catalog with GET /products.');
  end if;
  if on_hand::bigint + adjust_stock.delta < 0 then
    perform core.raise_error(
      '409', 'insufficient_stock', 'Not enough stock to take these units away.',
      jsonb_build_object('product_id', adjust_stock.id, 'requested', -adjust_stock.delta::bigint, 'available', on_hand),
      'Take at most the available units.'
    );
  end if;
  if on_hand::bigint + adjust_stock.delta > 2147483647 then
    perform core.raise_invalid(
      'delta', 'The resulting stock would be too large.',
      jsonb_build_object('available', on_hand), 'Stock is at most 2147483647 units.'
    );
  end if;

  insert into core.inventory_movements (product_id, delta, reason, actor_user_id, note)
  values (adjust_stock.id, adjust_stock.delta, adjust_stock.reason, core.current_user_id(), coalesce(adjust_stock.note, ''));
  return core.product_json(adjust_stock.id, true);
end;
$$;

comment on function api.adjust_stock(bigint, integer, text, text) is
'Staff: moves a product''s stock by delta units (positive adds, negative takes) with a ledger movement of
the given reason (restock, adjustment or correction) and optional note; returns the product. Stock never
goes negative.
Errors: 403 forbidden; 404 not_found; 409 insufficient_stock {product_id, requested, available};
422 invalid_input naming the field.
@route POST /products/{id}/stock';

grant execute on function api.adjust_stock(bigint, integer, text, text) to app_admin;

commit;
