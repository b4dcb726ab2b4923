-- Revert commercecore:procedures/orders/items from pg
begin;

drop function core.parse_order_items(jsonb);
drop function core.is_whole_number(jsonb, numeric, numeric);

commit;
