-- Revert commercecore:procedures/orders/common from pg
begin;

drop function core.raise_insufficient_stock(bigint, bigint, integer);
drop function core.lock_pending_order(bigint);
drop function core.order_json(bigint);

commit;
