-- Revert commercecore:procedures/catalog/movements from pg
begin;

drop function api.product_movements(bigint, bigint, integer);
drop function core.movements_page_max();

commit;
