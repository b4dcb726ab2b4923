-- Revert commercecore:procedures/orders/reads from pg
begin;

drop function api.order_item_rows();
drop function api.order_rows();
drop function api.get_order(bigint);

commit;
