-- Deploy commercecore:procedures/billing/payment_states to pg
-- requires: procedures/billing/refunds
-- The outcomes of a checkout. States: created -> open -> succeeded | failed | expired | canceled; succeeded ->
-- refunded. Forward-only: a late event never moves a state back; the one exception is money: a success reported
-- for a failed, expired or canceled attempt still records `succeeded` (the customer was charged), but never
-- pays the order and is flagged for an automatic refund. Lock order: the payment row, then its order row.
begin;

set local role app_owner;

create or replace function billing.mark_payment_completed(
  payment_id bigint,
  amount_minor bigint,
  currency text,
  payment_intent_id text default null,
  checkout_session_id text default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  payment core.payments;
  ord core.orders;
  refund core.refunds;
  charged_currency text := pg_catalog.upper(mark_payment_completed.currency);
  previous_status text;
  reason text;
  will_apply boolean;
begin
  if mark_payment_completed.amount_minor is null or mark_payment_completed.amount_minor < 0 then
    perform core.raise_invalid(
      'amount_minor', 'amount_minor must be a non-negative amount in minor units.',
      pg_catalog.jsonb_build_object('value', mark_payment_completed.amount_minor),
      'Pass the amount Stripe reports (amount_total).'
    );
  end if;
  if charged_currency is null or charged_currency !~ '^[A-Z]{3}$' then
    perform core.raise_invalid(
      'currency', 'currency must be a 3-letter ISO 4217 code.',
      pg_catalog.jsonb_build_object('value', mark_payment_completed.currency), 'Pass the currency Stripe reports.'
    );
  end if;

  -- lock order: payment, then order
  select p.* into payment from core.payments as p where p.id = mark_payment_completed.payment_id for update;
  if not found then
    perform billing.raise_payment_not_found(mark_payment_completed.payment_id);
  end if;
  if payment.checkout_session_id <> mark_payment_completed.checkout_session_id then
    perform core.raise_error(
      '409', 'checkout_session_mismatch',
      pg_catalog.format('Payment %s belongs to another checkout session.', payment.id),
      pg_catalog.jsonb_build_object(
        'payment_id', payment.id, 'checkout_session_id', mark_payment_completed.checkout_session_id
      ),
      'Look the payment up by its checkout session with billing.find_payment.'
    );
  end if;
  if payment.payment_intent_id <> mark_payment_completed.payment_intent_id then
    perform core.raise_error(
      '409', 'payment_intent_mismatch', pg_catalog.format('Payment %s belongs to another payment intent.', payment.id),
      pg_catalog.jsonb_build_object(
        'payment_id', payment.id, 'payment_intent_id', mark_payment_completed.payment_intent_id
      ),
      'Look the payment up by its payment intent with billing.find_payment.'
    );
  end if;
  select o.* into strict ord from core.orders as o where o.id = payment.order_id for update;

  -- a duplicate (redelivery, webhook and reconciliation racing): the first success stands
  if payment.status in ('succeeded', 'refunded') then
    if payment.payment_intent_id is null and mark_payment_completed.payment_intent_id is not null then
      update core.payments as p set payment_intent_id = mark_payment_completed.payment_intent_id
      where p.id = payment.id
      returning * into payment;
    end if;
    return billing.payment_json(payment) || pg_catalog.jsonb_build_object(
      'outcome', case when payment.applied then 'already_applied' else 'already_recorded' end,
      'changed', false,
      'reason', payment.refund_reason,
      'order_status', ord.status
    );
  end if;

  previous_status := payment.status;
  -- the invariant: only a success on the live attempt of a pending order, for exactly its total, pays it
  -- a newer attempt is tested first, so the reason does not depend on which success arrives first
  reason := case
    when exists (select from core.payments as p where p.order_id = ord.id and p.attempt > payment.attempt) then 'superseded'
    when ord.status <> 'pending' then 'order_not_pending'
    -- the attempt had been closed (failed, expired, canceled): the money moved, but nothing is applied
    when previous_status not in ('created', 'open') then 'superseded'
    when charged_currency <> ord.currency then 'currency_mismatch'
    when mark_payment_completed.amount_minor <> ord.total_minor then 'amount_mismatch'
  end;
  will_apply := reason is null;

  update core.payments as p
  set
    status = 'succeeded',
    succeeded_at = pg_catalog.now(),
    -- the row records the money that moved
    amount_minor = mark_payment_completed.amount_minor,
    currency = charged_currency,
    payment_intent_id = coalesce(p.payment_intent_id, mark_payment_completed.payment_intent_id),
    checkout_session_id = coalesce(p.checkout_session_id, mark_payment_completed.checkout_session_id),
    applied = will_apply,
    refund_required = not will_apply,
    refund_reason = reason
  where p.id = payment.id
  returning * into payment;

  if will_apply then
    update core.orders as o set status = 'paid', paid_at = pg_catalog.now()
    where o.id = ord.id
    returning * into ord;
  elsif payment.amount_minor > 0 then
    refund := billing.create_refund(payment, payment.amount_minor, reason, null);
  end if;

  return billing.payment_json(payment) || pg_catalog.jsonb_build_object(
    'outcome', case when will_apply then 'paid' else 'refund_required' end,
    'changed', true,
    'previous_status', previous_status,
    'reason', reason,
    'order_status', ord.status,
    'refund', case when refund.id is not null then billing.refund_json(refund) end
  );
end;
$$;

comment on function billing.mark_payment_completed(bigint, bigint, text, text, text) is
'Records a successful payment (checkout.session.completed / async_payment_succeeded, or reconciliation).
It pays the order (status paid, paid_at; payment applied) only when the order is pending, the attempt is the
order''s newest and still created/open, and amount and currency equal the order total now. Any other success
is recorded as succeeded with applied = false, refund_required = true, refund_reason (order_not_pending,
superseded, currency_mismatch, amount_mismatch; a success on a failed/expired/canceled attempt counts as
superseded) and a pending automatic refund (returned as refund: send it to Stripe with its idempotency_key).
amount_minor and currency are what Stripe charged; the payment row keeps them.
Returns the payment with outcome: paid | refund_required (reason) | already_applied | already_recorded
(duplicates change nothing), changed, previous_status, order_status. PT404 unknown payment; PT409
checkout_session_mismatch / payment_intent_mismatch; PT422 invalid amount or currency.';

grant execute on function billing.mark_payment_completed(bigint, bigint, text, text, text) to app_payments;

create or replace function billing.close_payment(payment_id bigint, new_status text, reason text) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  payment core.payments;
  previous_status text;
begin
  select p.* into payment from core.payments as p where p.id = close_payment.payment_id for update;
  if not found then
    perform billing.raise_payment_not_found(close_payment.payment_id);
  end if;
  previous_status := payment.status;
  -- forward-only: a terminal attempt (and above all a succeeded one) is never moved by a late event
  if payment.status not in ('created', 'open') then
    return billing.payment_json(payment) || pg_catalog.jsonb_build_object(
      'outcome', 'unchanged', 'changed', false, 'previous_status', previous_status
    );
  end if;
  update core.payments as p
  set status = close_payment.new_status, failure_reason = coalesce(close_payment.reason, p.failure_reason)
  where p.id = payment.id
  returning * into payment;
  return billing.payment_json(payment) || pg_catalog.jsonb_build_object(
    'outcome', close_payment.new_status, 'changed', true, 'previous_status', previous_status
  );
end;
$$;

comment on function billing.close_payment(bigint, text, text) is
'Internal: created/open -> failed | expired | canceled under the payment row lock; a no-op on any other state.';

create or replace function billing.mark_payment_failed(payment_id bigint, reason text) returns jsonb
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  select billing.close_payment(mark_payment_failed.payment_id, 'failed', mark_payment_failed.reason)
$$;

comment on function billing.mark_payment_failed(bigint, text) is
'created/open -> failed, with the reason (checkout.session.async_payment_failed). Forward-only: on any other
state a no-op that returns the payment with outcome unchanged. Returns the payment with outcome (failed |
unchanged), changed, previous_status. PT404 unknown payment.
Note: Stripe Checkout lets a customer retry another card inside the same session, so an intermediate
payment_intent.payment_failed is not a reason to call this; a success after a failure is never applied.';

grant execute on function billing.mark_payment_failed(bigint, text) to app_payments;

create or replace function billing.mark_payment_expired(payment_id bigint) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  superseded_by integer;
begin
  -- the gateway expires a superseded attempt's session at Stripe after the newer attempt is committed, then
  -- cancels the old one; the session's expiry event may overtake that cancel, and ends the attempt the same way
  select min(n.attempt) into superseded_by
  from core.payments as p
  join core.payments as n on p.order_id = n.order_id and n.attempt > p.attempt
  where p.id = mark_payment_expired.payment_id;
  if superseded_by is null then
    return billing.close_payment(mark_payment_expired.payment_id, 'expired', null);
  end if;
  return billing.close_payment(
    mark_payment_expired.payment_id, 'canceled', pg_catalog.format('superseded by attempt %s', superseded_by)
  );
end;
$$;

comment on function billing.mark_payment_expired(bigint) is
'created/open -> expired (checkout.session.expired, or after the gateway expired the session at Stripe); an
attempt with a newer attempt of the same order -> canceled, superseded by attempt N, as the gateway closes
it, whichever of the two comes first. Forward-only: a late expiry after a success changes nothing (outcome
unchanged). Returns the payment with outcome (expired | canceled | unchanged), changed, previous_status.
PT404 unknown payment.';

grant execute on function billing.mark_payment_expired(bigint) to app_payments;

create or replace function billing.mark_payment_canceled(payment_id bigint, reason text) returns jsonb
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  select billing.close_payment(mark_payment_canceled.payment_id, 'canceled', mark_payment_canceled.reason)
$$;

comment on function billing.mark_payment_canceled(bigint, text) is
'created/open -> canceled with the reason (e.g. superseded by a newer attempt, order cancelled). Forward-only:
a no-op on any other state (outcome unchanged). Returns the payment with outcome (canceled | unchanged),
changed, previous_status. PT404 unknown payment.';


grant execute on function billing.mark_payment_canceled(bigint, text) to app_payments;

commit;
