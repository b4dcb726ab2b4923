-- Revert commercecore:procedures/billing from pg
begin;

drop function api.order_payments(bigint);
drop function api.refund_order(bigint, bigint);
drop function billing.mark_refund_failed(text, text, bigint);
drop function billing.mark_refund_succeeded(text, bigint, text);
drop function billing.apply_refunded_amount(core.payments, bigint);
drop function billing.attach_refund(bigint, text);
drop function billing.pending_refunds();
drop function billing.request_refund(bigint, bigint, text, bigint);
drop function billing.stale_payments(interval);
drop function billing.find_payment(text, text, bigint);
drop function billing.deferred_refund_events(text);
drop function billing.finish_stripe_event(text, text, bigint);
drop function billing.record_stripe_event(text, text, jsonb, timestamptz, boolean);
drop function billing.mark_payment_canceled(bigint, text);
drop function billing.mark_payment_expired(bigint);
drop function billing.mark_payment_failed(bigint, text);
drop function billing.close_payment(bigint, text, text);
drop function billing.mark_payment_completed(bigint, bigint, text, text, text);
drop function billing.attach_checkout_session(bigint, text, text, timestamptz);
drop function billing.begin_payment(bigint);
drop function billing.raise_payment_not_found(bigint);
drop function billing.create_refund(core.payments, bigint, text, bigint);
drop function billing.refundable_minor(core.payments);
drop function billing.refund_json(core.refunds);
drop function billing.payment_json(core.payments);

commit;
