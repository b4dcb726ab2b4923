-- Deploy commercecore:procedures/billing/payments to pg
-- requires: schema/payments
-- requires: procedures/errors
-- Payment attempts as the gateway's Stripe paths (role app_payments) see them: the payment shape, the error
-- for a missing one, and the look-ups by Stripe object and of attempts left open.
-- The payment state machine (docs/http-api.md section 11), in procedures/billing/: payments (this), refunds,
-- checkout, payment_states, refund_states, inbox, routes. Lock order, everywhere: the payment row, then its
-- order row, then refund rows; functions that start from an order (begin_payment) lock only the order. Every
-- transition re-reads the row under its lock, so two deliveries of the same event in parallel give exactly one
-- transition; the second sees the first's result.
begin;

set local role app_owner;

create or replace function billing.payment_json(payment core.payments) returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'payment_id', payment.id,
    'id', payment.id,
    'order_id', payment.order_id,
    'user_id', payment.user_id,
    'attempt', payment.attempt,
    'status', payment.status,
    'amount_minor', payment.amount_minor,
    'currency', payment.currency,
    'checkout_session_id', payment.checkout_session_id,
    'checkout_url', payment.checkout_url,
    'payment_intent_id', payment.payment_intent_id,
    'expires_at', payment.expires_at,
    'applied', payment.applied,
    'refund_required', payment.refund_required,
    'refund_reason', payment.refund_reason,
    'refunded_minor', payment.refunded_minor,
    'failure_reason', payment.failure_reason,
    'created_at', payment.created_at,
    'succeeded_at', payment.succeeded_at
  )
$$;

comment on function billing.payment_json(core.payments) is
'Internal: the billing view of a payment attempt (every field the gateway needs), as JSON.';

create or replace function billing.raise_payment_not_found(payment_id bigint) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform core.raise_not_found(
    'payment', payment_id, 'Look the payment up with billing.find_payment.',
    message => pg_catalog.format('Payment %s does not exist.', payment_id)
  );
end;
$$;

comment on function billing.raise_payment_not_found(bigint) is 'Internal: the PT404 error for a missing payment.';

create or replace function billing.find_payment(
  checkout_session_id text default null, payment_intent_id text default null, payment_id bigint default null
) returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select billing.payment_json(p)
  from core.payments as p
  where
    p.id = find_payment.payment_id
    or p.checkout_session_id = find_payment.checkout_session_id
    or p.payment_intent_id = find_payment.payment_intent_id
  -- the most specific key wins: our own id, then the session, then the intent
  order by
    (p.id = find_payment.payment_id) is not true,
    (p.checkout_session_id = find_payment.checkout_session_id) is not true,
    p.id desc
  limit 1
$$;

comment on function billing.find_payment(text, text, bigint) is
'The payment attempt for a Stripe object: by payment_id (client_reference_id / metadata), else by checkout
session id, else by payment intent id. Returns the payment as JSON, or null when none matches.';

grant execute on function billing.find_payment(text, text, bigint) to app_payments;

create or replace function billing.stale_payments(older_than interval) returns table (
  payment_id bigint,
  order_id bigint,
  attempt integer,
  status text,
  checkout_session_id text,
  payment_intent_id text,
  amount_minor bigint,
  currency text,
  created_at timestamptz,
  expires_at timestamptz
)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select
    p.id, p.order_id, p.attempt, p.status, p.checkout_session_id, p.payment_intent_id, p.amount_minor,
    p.currency, p.created_at, p.expires_at
  from core.payments as p
  where p.status in ('created', 'open') and p.created_at < pg_catalog.now() - stale_payments.older_than
  order by p.created_at, p.id
$$;

comment on function billing.stale_payments(interval) is
'Attempts still created/open that were started more than older_than ago, oldest first: reconciliation asks
Stripe about their sessions (a missed webhook) and applies the same transitions.';


grant execute on function billing.stale_payments(interval) to app_payments;

commit;
