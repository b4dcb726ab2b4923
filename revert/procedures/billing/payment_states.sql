-- Revert commercecore:procedures/billing/payment_states from pg
begin;

drop function billing.mark_payment_canceled(bigint, text);
drop function billing.mark_payment_expired(bigint);
drop function billing.mark_payment_failed(bigint, text);
drop function billing.close_payment(bigint, text, text);
drop function billing.mark_payment_completed(bigint, bigint, text, text, text);

commit;
