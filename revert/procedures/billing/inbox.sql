-- Revert commercecore:procedures/billing/inbox from pg
begin;

drop function billing.deferred_refund_events(text);
drop function billing.finish_stripe_event(text, text, bigint);
drop function billing.record_stripe_event(text, text, jsonb, timestamptz, boolean);

commit;
