-- Revert commercecore:views/orders from pg
begin;

drop view api.order_items;
drop view api.orders;

commit;
