-- Verify commercecore:procedures/billing on pg
begin;

-- the entry points exist, only app_payments may call them, and they are security definer
select
  1 / (
    count(*) = 16
    and bool_and(p.prosecdef)
    and bool_and(has_function_privilege('app_payments', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_readwrite', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_admin', p.oid, 'execute'))
    and not bool_or(has_function_privilege('public', p.oid, 'execute'))
  )::int
from pg_catalog.pg_proc as p
where p.oid in (
  'billing.begin_payment(bigint)'::regprocedure,
  'billing.attach_checkout_session(bigint, text, text, timestamptz)'::regprocedure,
  'billing.mark_payment_completed(bigint, bigint, text, text, text)'::regprocedure,
  'billing.mark_payment_failed(bigint, text)'::regprocedure,
  'billing.mark_payment_expired(bigint)'::regprocedure,
  'billing.mark_payment_canceled(bigint, text)'::regprocedure,
  'billing.record_stripe_event(text, text, jsonb, timestamptz, boolean)'::regprocedure,
  'billing.finish_stripe_event(text, text, bigint)'::regprocedure,
  'billing.deferred_refund_events(text)'::regprocedure,
  'billing.find_payment(text, text, bigint)'::regprocedure,
  'billing.stale_payments(interval)'::regprocedure,
  'billing.request_refund(bigint, bigint, text, bigint)'::regprocedure,
  'billing.pending_refunds()'::regprocedure,
  'billing.attach_refund(bigint, text)'::regprocedure,
  'billing.mark_refund_succeeded(text, bigint, text)'::regprocedure,
  'billing.mark_refund_failed(text, text, bigint)'::regprocedure
);

select 1 / has_function_privilege('app_admin', 'api.refund_order(bigint, bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.refund_order(bigint, bigint)', 'execute'))::int;
select 1 / has_function_privilege('app_readwrite', 'api.order_payments(bigint)', 'execute')::int;

-- behaviour: the inbox takes an event once, and keeps an event of the other mode without applying it
select 1 / (billing.record_stripe_event('evt_verify_billing', 'ping', '{}') = 'new')::int;
select 1 / (billing.record_stripe_event('evt_verify_billing', 'ping', '{}') = 'duplicate')::int;
select
  1 / (
    billing.record_stripe_event('evt_verify_billing_live', 'ping', '{"livemode": true}', null, false)
    = 'rejected:livemode_mismatch'
  )::int;
select 1 / count(*)::int from core.stripe_events
where id = 'evt_verify_billing_live' and outcome = 'rejected:livemode_mismatch' and processed_at is not null;

rollback;
