-- Revert commercecore:schema/orders from pg
begin;

alter table core.inventory_movements drop constraint inventory_movements_order_id_fkey;
drop function core.check_unpaid_age(core.orders);
drop function core.max_units_per_product();
drop function core.max_open_orders();
drop function core.order_max_unpaid_age();
drop table core.order_items;
drop function core.maintain_order_total();
drop table core.orders;

commit;
