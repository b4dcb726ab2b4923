-- Revert commercecore:procedures/ops/expiry from pg
begin;

drop function ops.expire_unpaid_orders(interval, interval);

commit;
