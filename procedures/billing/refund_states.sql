-- Deploy commercecore:procedures/billing/refund_states to pg
-- requires: procedures/billing/refunds
-- Stripe's answers on refunds: a refund that succeeded counts on its payment, and on the order the payment
-- paid; one that failed makes its amount refundable again. Lock order: the payment row, then its order row,
-- then refund rows.
begin;

set local role app_owner;

create or replace function billing.apply_refunded_amount(payment core.payments, amount_minor bigint) returns core.payments
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  updated core.payments;
begin
  -- the caller holds the payment and order row locks (in that order)
  if payment.refunded_minor + apply_refunded_amount.amount_minor > payment.amount_minor then
    perform core.raise_error(
      '409', 'refund_exceeds_balance', pg_catalog.format('Refunds of payment %s would exceed its amount.', payment.id),
      pg_catalog.jsonb_build_object(
        'payment_id', payment.id, 'requested', apply_refunded_amount.amount_minor,
        'refundable', payment.amount_minor - payment.refunded_minor
      ),
      'Check the refunds of this payment at Stripe.'
    );
  end if;
  update core.payments as p
  set
    refunded_minor = p.refunded_minor + apply_refunded_amount.amount_minor,
    status = case when p.refunded_minor + apply_refunded_amount.amount_minor >= p.amount_minor then 'refunded' else p.status end
  where p.id = payment.id
  returning * into updated;
  -- the order follows the payment that paid it: partial refunds keep it paid, a full refund makes it refunded
  if updated.applied then
    update core.orders as o
    set
      refunded_minor = least(o.total_minor, updated.refunded_minor),
      status = case when updated.refunded_minor >= o.total_minor then 'refunded' else o.status end
    where o.id = updated.order_id;
  end if;
  return updated;
end;
$$;

comment on function billing.apply_refunded_amount(core.payments, bigint) is
'Internal: adds a confirmed refund to the payment (refunded once fully refunded) and, for the payment that
paid its order, to the order (refunded once fully refunded).';

create or replace function billing.mark_refund_succeeded(
  stripe_refund_id text, amount_minor bigint default null, payment_intent_id text default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  refund core.refunds;
  payment core.payments;
  found_payment_id bigint;
  confirmed bigint;
  previous_status text;
begin
  if mark_refund_succeeded.amount_minor is not null and mark_refund_succeeded.amount_minor <= 0 then
    perform core.raise_invalid(
      'amount_minor', 'A refunded amount must be positive.',
      pg_catalog.jsonb_build_object('value', mark_refund_succeeded.amount_minor),
      'Pass the amount of the Stripe refund.'
    );
  end if;
  select r.payment_id into found_payment_id from core.refunds as r where r.stripe_refund_id = mark_refund_succeeded.stripe_refund_id;
  if not found then
    -- a refund made outside the gateway (Stripe dashboard): recorded when its payment intent is known
    select p.id into found_payment_id from core.payments as p
    where p.payment_intent_id = mark_refund_succeeded.payment_intent_id
    order by p.id desc limit 1;
  end if;
  if found_payment_id is null then
    perform core.raise_not_found(
      'refund', mark_refund_succeeded.stripe_refund_id,
      'Pass the payment intent id for a refund made outside the gateway.',
      message => 'No refund or payment matches this Stripe refund.'
    );
  end if;

  -- lock order: payment, then order, then refund
  select p.* into strict payment from core.payments as p where p.id = found_payment_id for update;
  perform from core.orders as o where o.id = payment.order_id for update;
  select r.* into refund from core.refunds as r where r.stripe_refund_id = mark_refund_succeeded.stripe_refund_id for update;

  if found and refund.status = 'succeeded' then
    return billing.refund_json(refund) || pg_catalog.jsonb_build_object(
      'outcome', 'already_succeeded', 'changed', false, 'payment_status', payment.status,
      'payment_refunded_minor', payment.refunded_minor
    );
  end if;

  confirmed := coalesce(mark_refund_succeeded.amount_minor, refund.amount_minor);
  if confirmed is null then
    perform core.raise_invalid(
      'amount_minor', 'The amount of a refund made outside the gateway is required.',
      hint => 'Pass the amount of the Stripe refund.'
    );
  end if;
  if refund.id is null then
    -- a refund made outside the gateway (Stripe dashboard): recorded so the books match Stripe
    refund := billing.create_refund(payment, confirmed, 'staff', null);
    previous_status := 'external';
  else
    previous_status := refund.status;
  end if;
  -- Stripe's word on money wins: a succeeded refund counts even if we had marked it failed
  update core.refunds as r
  set status = 'succeeded', amount_minor = confirmed, stripe_refund_id = mark_refund_succeeded.stripe_refund_id, failure_reason = null
  where r.id = refund.id
  returning * into refund;
  payment := billing.apply_refunded_amount(payment, confirmed);

  return billing.refund_json(refund) || pg_catalog.jsonb_build_object(
    'outcome', 'succeeded', 'changed', true, 'previous_status', previous_status,
    'payment_status', payment.status, 'payment_refunded_minor', payment.refunded_minor,
    'order_id', payment.order_id,
    'order_status', (select o.status from core.orders as o where o.id = payment.order_id)
  );
end;
$$;

comment on function billing.mark_refund_succeeded(text, bigint, text) is
'Stripe confirmed a refund (refund.updated / charge.refunded): the refund becomes succeeded with Stripe''s
amount (default: the requested one), which is added to payments.refunded_minor; the payment becomes refunded
when that reaches its amount. For the payment that paid the order, orders.refunded_minor follows and the
order becomes refunded when fully refunded (partial refunds keep it paid). Idempotent by stripe_refund_id
(outcome already_succeeded). An unknown stripe_refund_id with a known payment_intent_id is a refund made
outside the gateway and is recorded. Returns the refund with outcome, payment_status, order_status.';

grant execute on function billing.mark_refund_succeeded(text, bigint, text) to app_payments;

create or replace function billing.mark_refund_failed(
  stripe_refund_id text, reason text default null, refund_id bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  refund core.refunds;
  found_payment_id bigint;
begin
  select r.payment_id into found_payment_id
  from core.refunds as r
  where r.stripe_refund_id = mark_refund_failed.stripe_refund_id or r.id = mark_refund_failed.refund_id
  order by (r.stripe_refund_id = mark_refund_failed.stripe_refund_id) is not true
  limit 1;
  if not found then
    perform core.raise_not_found(
      'refund', coalesce(mark_refund_failed.stripe_refund_id, mark_refund_failed.refund_id::text),
      'Pass the Stripe refund id, or the refund id when Stripe refused to create it.',
      message => 'No refund matches.'
    );
  end if;
  perform from core.payments as p where p.id = found_payment_id for update;
  select r.* into strict refund
  from core.refunds as r
  where
    r.payment_id = found_payment_id
    and (r.stripe_refund_id = mark_refund_failed.stripe_refund_id or r.id = mark_refund_failed.refund_id)
  order by (r.stripe_refund_id = mark_refund_failed.stripe_refund_id) is not true
  limit 1
  for update;
  if refund.status <> 'pending' then
    return billing.refund_json(refund) || '{"outcome": "unchanged", "changed": false}'::jsonb;
  end if;
  update core.refunds as r
  set
    status = 'failed',
    failure_reason = mark_refund_failed.reason,
    stripe_refund_id = coalesce(r.stripe_refund_id, mark_refund_failed.stripe_refund_id)
  where r.id = refund.id
  returning * into refund;
  return billing.refund_json(refund) || '{"outcome": "failed", "changed": true}'::jsonb;
end;
$$;

comment on function billing.mark_refund_failed(text, text, bigint) is
'A refund failed (refund.failed, or Stripe refused to create it: then pass refund_id): pending -> failed with
the reason; its amount is refundable again. Idempotent: other states are left alone (outcome unchanged).
An automatic refund that failed is not retried by itself: staff see it (refund_required, refunded_minor <
amount_minor) and call request_refund. PT404 unknown refund.';


grant execute on function billing.mark_refund_failed(text, text, bigint) to app_payments;

commit;
