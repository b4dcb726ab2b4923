-- Deploy commercecore:procedures/billing/refunds to pg
-- requires: procedures/billing/payments
-- Refund requests, before Stripe answers: the refund shape, what is left to refund on a payment, the
-- pending refund with its Stripe idempotency key, and the list of refunds to carry out at Stripe.
begin;

set local role app_owner;

create or replace function billing.refund_json(refund core.refunds) returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'refund_id', refund.id,
    'id', refund.id,
    'payment_id', refund.payment_id,
    'amount_minor', refund.amount_minor,
    'currency', refund.currency,
    'status', refund.status,
    'reason', refund.reason,
    'stripe_refund_id', refund.stripe_refund_id,
    'idempotency_key', refund.idempotency_key,
    'failure_reason', refund.failure_reason,
    'requested_by', refund.requested_by,
    'created_at', refund.created_at
  )
$$;

comment on function billing.refund_json(core.refunds) is 'Internal: a refund as JSON.';

create or replace function billing.refundable_minor(payment core.payments) returns bigint
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select payment.amount_minor - payment.refunded_minor - coalesce((
    select sum(r.amount_minor) from core.refunds as r where r.payment_id = payment.id and r.status = 'pending'
  ), 0)::bigint
$$;

comment on function billing.refundable_minor(core.payments) is
'Internal: what may still be refunded on a payment: amount - refunded - refunds still pending at Stripe.';

create or replace function billing.create_refund(
  payment core.payments, amount_minor bigint, reason text, requested_by bigint
) returns core.refunds
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  sequence_number integer;
  refund core.refunds;
begin
  -- the caller holds the payment row lock, so counting the payment's refunds gives a stable number. The key
  -- is stored with the refund, so every retry sends the same one; its random part keeps it from meeting a
  -- key Stripe still remembers from a refund this database no longer has (a restore to an earlier point,
  -- another installation on the same Stripe account), which Stripe would answer with that other refund
  select count(*) + 1 into sequence_number from core.refunds as r where r.payment_id = payment.id;
  insert into core.refunds (payment_id, amount_minor, currency, reason, requested_by, idempotency_key)
  values (
    payment.id, create_refund.amount_minor, payment.currency, create_refund.reason, create_refund.requested_by,
    pg_catalog.format(
      'cc_refund_%s_%s_%s', payment.id, sequence_number,
      pg_catalog.left(pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), 16)
    )
  )
  returning * into refund;
  return refund;
end;
$$;

comment on function billing.create_refund(core.payments, bigint, text, bigint) is
'Internal: inserts a pending refund with its Stripe idempotency key cc_refund_<payment id>_<n>_<16 random hex
digits>, kept for all its retries. The caller must hold the payment row lock and have checked the refundable
balance.';

create or replace function billing.request_refund(
  payment_id bigint, amount_minor bigint default null, reason text default 'staff', requested_by bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  payment core.payments;
  refund core.refunds;
  refundable bigint;
  wanted bigint;
begin
  if request_refund.reason is null
    or request_refund.reason not in ('superseded', 'amount_mismatch', 'currency_mismatch', 'order_not_pending', 'staff')
  then
    perform core.raise_invalid(
      'reason', 'Unknown refund reason.',
      pg_catalog.jsonb_build_object('value', request_refund.reason), 'Use staff, or the refund_reason of the payment.'
    );
  end if;
  if request_refund.amount_minor is not null and request_refund.amount_minor <= 0 then
    perform core.raise_invalid(
      'amount', 'A refund amount must be positive.',
      pg_catalog.jsonb_build_object('value', request_refund.amount_minor),
      'Leave the amount out to refund everything that is left.'
    );
  end if;
  select p.* into payment from core.payments as p where p.id = request_refund.payment_id for update;
  if not found then
    perform billing.raise_payment_not_found(request_refund.payment_id);
  end if;
  if payment.status not in ('succeeded', 'refunded') then
    perform core.raise_error(
      '409', 'payment_not_refundable',
      pg_catalog.format('Payment %s is %s: there is nothing to refund.', payment.id, payment.status),
      pg_catalog.jsonb_build_object('payment_id', payment.id, 'status', payment.status),
      'Only succeeded payments can be refunded.'
    );
  end if;
  refundable := billing.refundable_minor(payment);
  wanted := coalesce(request_refund.amount_minor, refundable);
  if wanted <= 0 or wanted > refundable then
    perform core.raise_error(
      '409', 'refund_exceeds_balance',
      pg_catalog.format('A refund of %s exceeds what is left to refund on payment %s (%s).', wanted, payment.id, refundable),
      pg_catalog.jsonb_build_object('payment_id', payment.id, 'requested', wanted, 'refundable', refundable),
      'Refund at most the refundable amount (amount - refunded - pending refunds).'
    );
  end if;
  refund := billing.create_refund(payment, wanted, request_refund.reason, request_refund.requested_by);
  return billing.refund_json(refund) || pg_catalog.jsonb_build_object(
    'order_id', payment.order_id,
    'payment_intent_id', payment.payment_intent_id,
    'checkout_session_id', payment.checkout_session_id,
    'refundable_minor', refundable - wanted
  );
end;
$$;

comment on function billing.request_refund(bigint, bigint, text, bigint) is
'Records a refund request (status pending) for a succeeded payment: amount_minor, or everything refundable
when null. The refundable balance is amount - refunded - pending refunds; more -> PT409
refund_exceeds_balance; not succeeded -> PT409 payment_not_refundable; PT404 unknown payment; PT422 bad
amount or reason. Each call is a new request with a deterministic idempotency key (cc_refund_<payment>_<n>)
that the gateway sends to Stripe. Returns the refund with payment_intent_id and the refundable_minor left.';

grant execute on function billing.request_refund(bigint, bigint, text, bigint) to app_payments;

create or replace function billing.pending_refunds() returns table (
  refund_id bigint,
  payment_id bigint,
  order_id bigint,
  payment_intent_id text,
  checkout_session_id text,
  amount_minor bigint,
  currency text,
  reason text,
  idempotency_key text,
  stripe_refund_id text,
  created_at timestamptz
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  candidate bigint;
  payment core.payments;
begin
  -- the automatic refunds: a success that could not apply and has no refund yet gets one for its balance
  -- (normally mark_payment_completed created it already; this is the safety net)
  for candidate in
    select p.id from core.payments as p
    where
      p.refund_required and p.status = 'succeeded'
      and not exists (select from core.refunds as r where r.payment_id = p.id)
    order by p.id
  loop
    select p.* into payment from core.payments as p where p.id = candidate for update skip locked;
    continue when not found;  -- someone is working on this payment right now; the next run sees it
    if
      payment.refund_required and payment.status = 'succeeded'
      and not exists (select from core.refunds as r where r.payment_id = payment.id)
      and billing.refundable_minor(payment) > 0
    then
      perform billing.create_refund(payment, billing.refundable_minor(payment), payment.refund_reason, null);
    end if;
  end loop;

  return query
  select
    r.id, r.payment_id, p.order_id, p.payment_intent_id, p.checkout_session_id, r.amount_minor, r.currency,
    r.reason, r.idempotency_key, r.stripe_refund_id, r.created_at
  from core.refunds as r
  join core.payments as p on p.id = r.payment_id
  where r.status = 'pending'
  order by r.id;
end;
$$;

comment on function billing.pending_refunds() is
'The refunds to carry out at Stripe: every pending refund, oldest first, after creating the automatic refund
of any refund_required payment that has none yet. stripe_refund_id null: not sent yet (create it at Stripe
with idempotency_key, then attach_refund); set: sent, waiting for Stripe''s answer (poll it).';

grant execute on function billing.pending_refunds() to app_payments;

create or replace function billing.attach_refund(refund_id bigint, stripe_refund_id text) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  refund core.refunds;
begin
  select r.* into refund from core.refunds as r where r.id = attach_refund.refund_id for update;
  if not found then
    perform core.raise_not_found(
      'refund', attach_refund.refund_id, 'List the refunds to send with billing.pending_refunds.',
      message => pg_catalog.format('Refund %s does not exist.', attach_refund.refund_id)
    );
  end if;
  if refund.stripe_refund_id = attach_refund.stripe_refund_id then
    return billing.refund_json(refund) || '{"changed": false}'::jsonb;
  end if;
  if refund.stripe_refund_id is not null then
    perform core.raise_error(
      '409', 'refund_conflict', pg_catalog.format('Refund %s is already attached to another Stripe refund.', refund.id),
      pg_catalog.jsonb_build_object('refund_id', refund.id, 'stripe_refund_id', attach_refund.stripe_refund_id),
      'Send each refund to Stripe with its idempotency_key, so a retry returns the same Stripe refund.'
    );
  end if;
  begin
    update core.refunds as r set stripe_refund_id = attach_refund.stripe_refund_id
    where r.id = refund.id
    returning * into refund;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'refund_conflict', 'This Stripe refund is attached to another refund.',
      pg_catalog.jsonb_build_object('refund_id', refund.id, 'stripe_refund_id', attach_refund.stripe_refund_id),
      'Each refund has its own Stripe refund.'
    );
  end;
  return billing.refund_json(refund) || '{"changed": true}'::jsonb;
end;
$$;

comment on function billing.attach_refund(bigint, text) is
'Records the Stripe refund id (re_...) of a refund once Stripe accepted it; idempotent for the same id
(changed: false); PT409 refund_conflict for another id; PT404 unknown refund. Returns the refund.';

grant execute on function billing.attach_refund(bigint, text) to app_payments;

commit;
