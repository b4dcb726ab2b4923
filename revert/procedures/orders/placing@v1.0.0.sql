-- Revert commercecore:procedures/orders/placing from pg
begin;

drop function core.take_stock(bigint, bigint, bigint[], integer[]);
drop function core.insert_order_lines(bigint, bigint, bigint[], integer[]);
drop function core.lock_order_products(bigint[], integer[], text);
drop function core.insert_order(bigint, text, core.addresses);
drop function core.order_currency(bigint[]);
drop function core.order_shipping_address(bigint, bigint);

commit;
