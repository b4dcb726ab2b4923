-- Revert commercecore:schema/catalog from pg
begin;

drop table core.inventory_movements;
drop function core.forbid_ledger_rewrite();
drop function core.apply_inventory_movement();
drop table core.products;
drop function core.guard_product_stock();
drop table core.categories;

commit;
