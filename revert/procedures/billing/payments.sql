-- Revert commercecore:procedures/billing/payments from pg
begin;

drop function billing.stale_payments(interval);
drop function billing.find_payment(text, text, bigint);
drop function billing.raise_payment_not_found(bigint);
drop function billing.payment_json(core.payments);

commit;
