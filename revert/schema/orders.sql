-- Revert commercecore:schema/orders from pg
begin;

alter table core.inventory_movements drop constraint inventory_movements_order_id_fkey;
drop table core.order_items;
drop function core.maintain_order_total();
drop table core.orders;

commit;
