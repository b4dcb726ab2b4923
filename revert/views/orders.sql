-- Revert commercecore:views/orders from pg
begin;

drop view api.order_items;
drop view api.orders;
drop function api.order_item_rows();
drop function api.order_rows();
drop function api.get_order(bigint);

commit;
