-- Revert commercecore:procedures/billing/routes from pg
begin;

drop function api.order_payments(bigint);
drop function api.refund_order(bigint, bigint);

commit;
