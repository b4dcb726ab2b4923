-- Revert commercecore:procedures/orders/changes from pg
begin;

drop function api.cancel_order(bigint);
drop function api.delete_product_in_order(bigint, bigint);
drop function api.modify_order(bigint, bigint, integer);

commit;
