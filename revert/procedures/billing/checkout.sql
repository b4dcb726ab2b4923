-- Revert commercecore:procedures/billing/checkout from pg
begin;

drop function billing.attach_checkout_session(bigint, text, text, timestamptz);
drop function billing.begin_payment(bigint);

commit;
