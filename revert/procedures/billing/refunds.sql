-- Revert commercecore:procedures/billing/refunds from pg
begin;

drop function billing.attach_refund(bigint, text);
drop function billing.pending_refunds();
drop function billing.request_refund(bigint, bigint, text, bigint);
drop function billing.create_refund(core.payments, bigint, text, bigint);
drop function billing.refundable_minor(core.payments);
drop function billing.refund_json(core.refunds);

commit;
