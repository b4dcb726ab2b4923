-- Revert commercecore:schema/stock_shards from pg
begin;

set local role app_owner;

-- the row triggers of core.products as they were
drop trigger products_audit_update on core.products;
drop trigger products_audit on core.products;
create trigger products_audit after insert or update or delete on core.products
for each row execute function audit.record_change();

drop trigger products_set_updated_at on core.products;
create trigger products_set_updated_at before update on core.products
for each row execute function core.set_updated_at();

drop trigger products_guard_stock_insert on core.products;
drop trigger products_guard_stock on core.products;

-- a revert never loses stock: the units of the shards go back to their product rows (the ledger keeps its
-- rows, so each product's stock is still its ledger sum), before the guard is back
alter table core.products drop constraint products_sharded_stock_check;
update core.products as p set stock = p.stock + s.units
from (select product_id, sum(units)::integer as units from core.stock_shards group by product_id) as s
where p.id = s.product_id and s.units <> 0;

create trigger products_guard_stock before insert or update of stock on core.products
for each row execute function core.guard_product_stock();

drop table core.stock_shards;
drop function core.guard_shard_units();

drop trigger inventory_movements_apply on core.inventory_movements;
drop function core.apply_inventory_movements();

create function core.apply_inventory_movement() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- the check constraint products_stock_check refuses a negative result; callers lock the product row
  -- first (in id order) so that they see the stock they are about to change
  update core.products set stock = stock + new.delta where id = new.product_id;
  return null;
end;
$$;

comment on function core.apply_inventory_movement() is 'Trigger: applies a ledger row to products.stock.';

create trigger inventory_movements_apply after insert on core.inventory_movements
for each row execute function core.apply_inventory_movement();

-- the ledger is append-only: rebalance movements stay, so the old reasons are checked for new rows only
-- when there are some
alter table core.inventory_movements
drop constraint inventory_movements_reason_check,
drop column shard,
add constraint inventory_movements_reason_check check (
  reason in ('restock', 'adjustment', 'order', 'order_change', 'order_cancel', 'order_expired', 'correction')
) not valid;

do $$
begin
  if not exists (select from core.inventory_movements as m where m.reason = 'rebalance') then
    alter table core.inventory_movements validate constraint inventory_movements_reason_check;
  end if;
end;
$$;

alter table core.products
drop constraint products_stock_shards_check,
drop column stock_shards;

commit;
