-- Revert commercecore:procedures/orders from pg
begin;

drop function api.cancel_order(bigint);
drop function api.delete_product_in_order(bigint, bigint);
drop function api.modify_order(bigint, bigint, integer);
drop function api.create_order(jsonb, bigint, text);
drop function core.check_order_limits(bigint, bigint[], integer[], boolean);
drop function core.lock_customer_orders(bigint);
drop function core.is_whole_number(jsonb, numeric, numeric);
drop function core.raise_insufficient_stock(bigint, bigint, integer);
drop function core.lock_pending_order(bigint);
drop function core.require_customer();
drop function core.order_document(bigint);

commit;
