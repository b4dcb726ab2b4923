-- Revert commercecore:procedures/ops/payments_safe from pg
begin;

drop function ops.payments_safe_rows();

commit;
