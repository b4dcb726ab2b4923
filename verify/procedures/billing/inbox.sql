-- Verify commercecore:procedures/billing/inbox on pg
begin;

-- the entry points exist, only app_payments may call them, and they are security definer
select
  1 / (
    count(*) = 3
    and bool_and(p.prosecdef)
    and bool_and(has_function_privilege('app_payments', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_readwrite', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_admin', p.oid, 'execute'))
    and not bool_or(has_function_privilege('public', p.oid, 'execute'))
  )::int
from pg_catalog.pg_proc as p
where p.oid in (
  'billing.record_stripe_event(text, text, jsonb, timestamptz, boolean)'::regprocedure,
  'billing.finish_stripe_event(text, text, bigint)'::regprocedure,
  'billing.deferred_refund_events(text)'::regprocedure
);

-- behaviour: the inbox takes an event once, and keeps an event of the other mode without applying it
select 1 / (billing.record_stripe_event('evt_verify_billing', 'ping', '{}') = 'new')::int;
select 1 / (billing.record_stripe_event('evt_verify_billing', 'ping', '{}') = 'duplicate')::int;
select billing.finish_stripe_event('evt_verify_billing', 'ignored_type');
select 1 / count(*)::int from core.stripe_events
where id = 'evt_verify_billing' and outcome = 'ignored_type' and processed_at is not null;
select
  1 / (
    billing.record_stripe_event('evt_verify_billing_live', 'ping', '{"livemode": true}', null, false)
    = 'rejected:livemode_mismatch'
  )::int;
select 1 / count(*)::int from core.stripe_events
where id = 'evt_verify_billing_live' and outcome = 'rejected:livemode_mismatch' and processed_at is not null;

rollback;
