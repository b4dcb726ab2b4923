-- Revert commercecore:procedures/billing/refund_states from pg
begin;

drop function billing.mark_refund_failed(text, text, bigint);
drop function billing.mark_refund_succeeded(text, bigint, text);
drop function billing.apply_refunded_amount(core.payments, bigint);

commit;
