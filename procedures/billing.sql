-- Deploy commercecore:procedures/billing to pg
-- requires: schema/payments
-- requires: schema/audit
-- requires: schema/errors
-- The payment state machine (docs/http-api.md section 11) and the Stripe inbox, for the gateway's Stripe
-- paths (role app_payments), plus the two api functions staff and customers reach it by (refund, payment
-- list).
--
-- States: created -> open -> succeeded | failed | expired | canceled; succeeded -> refunded. Forward-only:
-- a late event never moves a state back; the one exception is money: a success reported for a failed,
-- expired or canceled attempt still records `succeeded` (the customer was charged), but never pays the order
-- and is flagged for an automatic refund.
--
-- Lock order, everywhere: the payment row, then its order row, then refund rows. Functions that start from
-- an order (begin_payment) lock only the order. Every transition re-reads the row under its lock, so two
-- deliveries of the same event in parallel give exactly one transition; the second sees the first's result.
begin;

set local role app_owner;

-- internal helpers (no grants: only the functions below, running as app_owner, call them) ------------------

create function billing.payment_json(payment core.payments) returns jsonb
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

create function billing.refund_json(refund core.refunds) returns jsonb
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

create function billing.refundable_minor(payment core.payments) returns bigint
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

create function billing.create_refund(
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

create function billing.raise_payment_not_found(payment_id bigint) returns void
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

-- checkout ------------------------------------------------------------------------------------------------

create function billing.begin_payment(order_id bigint) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  ord core.orders;
  payment core.payments;
  claims jsonb := nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb;
  next_attempt integer;
  items jsonb;
  previous_open jsonb;
begin
  -- the order row lock serialises attempts of one order (and orders against modify_order and cancel_order)
  select o.* into ord from core.orders as o where o.id = begin_payment.order_id for update;
  -- a customer's checkout (the gateway passes the customer's claims) may only start on their own order
  if
    not found
    or (
      core.current_user_id() is not null
      and coalesce(claims ->> 'role', '') <> 'app_admin'
      and ord.user_id <> core.current_user_id()
    )
  then
    perform core.raise_not_found(
      'order', begin_payment.order_id, 'Check the order id.',
      message => pg_catalog.format('Order %s does not exist.', begin_payment.order_id)
    );
  end if;
  if ord.status <> 'pending' then
    perform core.raise_error(
      '409', 'order_not_payable', pg_catalog.format('Order %s is %s and cannot be paid.', ord.id, ord.status),
      pg_catalog.jsonb_build_object('order_id', ord.id, 'status', ord.status), 'Only pending orders can be paid.'
    );
  end if;
  -- the maximum age counts from the order's creation: a new attempt never gives an unpaid order more time
  perform core.check_unpaid_age(ord);

  select
    pg_catalog.jsonb_agg(
      pg_catalog.jsonb_build_object(
        'product_id', i.product_id, 'name', p.name, 'quantity', i.quantity, 'unit_price_minor', i.unit_price_minor
      ) order by i.product_id
    )
  into items
  from core.order_items as i
  join core.products as p on p.id = i.product_id
  where i.order_id = ord.id;

  if items is null or ord.total_minor <= 0 then
    perform core.raise_error(
      '409', 'order_empty', pg_catalog.format('Order %s has nothing to pay.', ord.id),
      pg_catalog.jsonb_build_object('order_id', ord.id, 'total_minor', ord.total_minor),
      'Add items to the order before checking out.'
    );
  end if;

  select
    coalesce(pg_catalog.jsonb_agg(
      pg_catalog.jsonb_build_object(
        'payment_id', p.id, 'attempt', p.attempt, 'status', p.status, 'checkout_session_id', p.checkout_session_id
      ) order by p.attempt
    ), '[]'::jsonb)
  into previous_open
  from core.payments as p
  where p.order_id = ord.id and p.status in ('created', 'open');

  select coalesce(max(p.attempt), 0) + 1 into next_attempt from core.payments as p where p.order_id = ord.id;

  insert into core.payments (order_id, user_id, attempt, status, amount_minor, currency)
  values (ord.id, ord.user_id, next_attempt, 'created', ord.total_minor, ord.currency)
  returning * into payment;

  return pg_catalog.jsonb_build_object(
    'payment_id', payment.id,
    'order_id', payment.order_id,
    'user_id', payment.user_id,
    'attempt', payment.attempt,
    'status', payment.status,
    'amount_minor', payment.amount_minor,
    'currency', payment.currency,
    'items', items,
    'previous_open', previous_open
  );
end;
$$;

comment on function billing.begin_payment(bigint) is
'Starts a new payment attempt (status created) for a pending, non-empty order: the next attempt number, the
amount and currency of the order total now. Returns {payment_id, order_id, attempt, amount_minor, currency,
items: [{product_id, name, quantity, unit_price_minor}], previous_open: [{payment_id, attempt, status,
checkout_session_id}]}. previous_open lists the older attempts still created/open: they are left as they are;
the gateway expires their sessions at Stripe and then calls mark_payment_expired or mark_payment_canceled.
Every call is a new attempt: create the Stripe session with idempotency key checkout_<payment_id>.
When the request carries a customer''s JWT claims, the order must be theirs. PT404 missing (or not yours),
PT409 order_not_payable (not pending), order_expired (older than its maximum unpaid age,
commercecore.order_max_unpaid_age, however many attempts it had) or order_empty (no items, nothing to pay).';

create function billing.attach_checkout_session(
  payment_id bigint, checkout_session_id text, checkout_url text, expires_at timestamptz
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  payment core.payments;
begin
  if coalesce(attach_checkout_session.checkout_session_id, '') = '' then
    perform core.raise_invalid(
      'checkout_session_id', 'A checkout session id is required.',
      hint => 'Pass the id of the Stripe Checkout Session (cs_...).'
    );
  end if;
  select p.* into payment from core.payments as p where p.id = attach_checkout_session.payment_id for update;
  if not found then
    perform billing.raise_payment_not_found(attach_checkout_session.payment_id);
  end if;

  if payment.checkout_session_id = attach_checkout_session.checkout_session_id then
    return billing.payment_json(payment) || '{"changed": false}'::jsonb;  -- a retry: same session, nothing to do
  end if;
  if payment.checkout_session_id is not null then
    perform core.raise_error(
      '409', 'checkout_session_conflict',
      pg_catalog.format('Payment %s already has another checkout session.', payment.id),
      pg_catalog.jsonb_build_object('payment_id', payment.id, 'status', payment.status),
      'Start a new attempt with billing.begin_payment and expire the extra session at Stripe.'
    );
  end if;
  if payment.status <> 'created' then
    perform core.raise_error(
      '409', 'payment_not_open',
      pg_catalog.format('Payment %s is %s; a checkout session can no longer be attached.', payment.id, payment.status),
      pg_catalog.jsonb_build_object('payment_id', payment.id, 'status', payment.status),
      'Expire the new session at Stripe; start a new attempt if the order is still pending.'
    );
  end if;

  begin
    update core.payments as p
    set
      status = 'open',
      checkout_session_id = attach_checkout_session.checkout_session_id,
      checkout_url = attach_checkout_session.checkout_url,
      expires_at = attach_checkout_session.expires_at
    where p.id = payment.id
    returning * into payment;
  exception when unique_violation then
    perform core.raise_error(
      '409', 'checkout_session_conflict', 'This checkout session belongs to another payment.',
      pg_catalog.jsonb_build_object(
        'payment_id', payment.id, 'checkout_session_id', attach_checkout_session.checkout_session_id
      ),
      'Each payment attempt has its own checkout session.'
    );
  end;
  return billing.payment_json(payment) || '{"changed": true}'::jsonb;
end;
$$;

comment on function billing.attach_checkout_session(bigint, text, text, timestamptz) is
'Records the Stripe Checkout Session of an attempt: created -> open, with its url and expiry. Idempotent for
the same session id (changed: false). PT409 checkout_session_conflict when the attempt has another session
or the session belongs to another attempt; PT409 payment_not_open when the attempt was already closed
(expired, canceled, ...): then expire the new session at Stripe. Returns the payment.';

-- outcomes of a checkout ------------------------------------------------------------------------------------

create function billing.mark_payment_completed(
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

create function billing.close_payment(payment_id bigint, new_status text, reason text) returns jsonb
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

create function billing.mark_payment_failed(payment_id bigint, reason text) returns jsonb
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

create function billing.mark_payment_expired(payment_id bigint) returns jsonb
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

create function billing.mark_payment_canceled(payment_id bigint, reason text) returns jsonb
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

-- the Stripe inbox -----------------------------------------------------------------------------------------

create function billing.record_stripe_event(
  id text, type text, payload jsonb, stripe_created_at timestamptz default null, key_livemode boolean default null
) returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  event_livemode boolean := coalesce((record_stripe_event.payload ->> 'livemode')::boolean, false);
  rejection text;
begin
  if record_stripe_event.id is null or record_stripe_event.id !~ '^evt_[A-Za-z0-9_]+$' then
    perform core.raise_invalid(
      'id', 'A Stripe event id (evt_...) is required.',
      pg_catalog.jsonb_build_object('value', record_stripe_event.id), 'Pass the id of the verified Stripe event.'
    );
  end if;
  -- a live event reaching a shop on a test key (or the reverse) is another environment's: kept, never applied
  if record_stripe_event.key_livemode is not null and event_livemode <> record_stripe_event.key_livemode then
    rejection := 'rejected:livemode_mismatch';
  end if;
  -- a concurrent delivery of the same id waits here for the first one's transaction, then does nothing
  insert into core.stripe_events (id, type, payload, livemode, stripe_created_at, processed_at, outcome)
  values (
    record_stripe_event.id,
    record_stripe_event.type,
    record_stripe_event.payload,
    event_livemode,
    coalesce(
      record_stripe_event.stripe_created_at,
      pg_catalog.to_timestamp((record_stripe_event.payload ->> 'created')::double precision)
    ),
    case when rejection is not null then pg_catalog.now() end,
    rejection
  )
  on conflict on constraint stripe_events_pkey do nothing;
  if not found then
    return 'duplicate';
  end if;
  return coalesce(rejection, 'new');
end;
$$;

comment on function billing.record_stripe_event(text, text, jsonb, timestamptz, boolean) is
'Stores a verified Stripe event in the inbox and says what to do with it: new (process it in the same
transaction, then finish_stripe_event), duplicate (already there: acknowledge it and do nothing), or
rejected:<reason> (stored already finished with that outcome: acknowledge it, never apply it). key_livemode is
the mode of the shop''s API key (true for sk_live_/rk_live_): an event whose livemode differs is
rejected:livemode_mismatch; null compares nothing. Two parallel deliveries of one event: the second waits for
the first''s transaction and then gets duplicate (or new, if the first rolled back).';

create function billing.finish_stripe_event(id text, outcome text, payment_id bigint default null) returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update core.stripe_events as e
  set
    processed_at = pg_catalog.now(),
    outcome = finish_stripe_event.outcome,
    payment_id = coalesce(finish_stripe_event.payment_id, e.payment_id)
  where e.id = finish_stripe_event.id;
  if not found then
    perform core.raise_not_found(
      'stripe_event', finish_stripe_event.id, 'Record the event with billing.record_stripe_event first.',
      message => pg_catalog.format('Stripe event %s is not in the inbox.', finish_stripe_event.id)
    );
  end if;
end;
$$;

comment on function billing.finish_stripe_event(text, text, bigint) is
'Marks an inbox event processed, with what processing did (the outcome of the transition, or why none was
applied, e.g. ignored_type, unknown_payment) and the payment it concerned. PT404 for an unknown event.';

create function billing.deferred_refund_events(payment_intent_id text)
returns table (id text, type text, object jsonb)
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  select e.id, e.type, e.payload #> '{data,object}'
  from core.stripe_events as e
  where
    e.outcome = 'deferred:unknown_payment_intent'
    and coalesce(e.payload #>> '{data,object,payment_intent,id}', e.payload #>> '{data,object,payment_intent}')
    = deferred_refund_events.payment_intent_id
  order by e.stripe_created_at, e.received_at, e.id
  for update of e
$$;

comment on function billing.deferred_refund_events(text) is
'The refund events of a payment intent that arrived before its payment''s success (Stripe does not order its
events: a refund made in the dashboard can overtake the checkout.session.completed), oldest first, locked:
the caller applies them now that the intent is known and finishes each with its new outcome.';

create function billing.find_payment(
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

create function billing.stale_payments(older_than interval) returns table (
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

-- refunds -------------------------------------------------------------------------------------------------

create function billing.request_refund(
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

create function billing.pending_refunds() returns table (
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

create function billing.attach_refund(refund_id bigint, stripe_refund_id text) returns jsonb
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

create function billing.apply_refunded_amount(payment core.payments, amount_minor bigint) returns core.payments
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

create function billing.mark_refund_succeeded(
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

create function billing.mark_refund_failed(
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

-- the api entry points ------------------------------------------------------------------------------------

create function api.refund_order(order_id bigint, amount bigint default null) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  ord core.orders;
  applied_payment_id bigint;
  refund jsonb;
begin
  select o.* into ord from core.orders as o where o.id = refund_order.order_id;
  if not found then
    perform core.raise_not_found(
      'order', refund_order.order_id, 'Check the order id.',
      message => pg_catalog.format('Order %s does not exist.', refund_order.order_id)
    );
  end if;
  select p.id into applied_payment_id from core.payments as p where p.order_id = ord.id and p.applied;
  if applied_payment_id is null then
    perform core.raise_error(
      '409', 'order_not_refundable',
      pg_catalog.format('Order %s is %s: it has no payment to refund.', ord.id, ord.status),
      pg_catalog.jsonb_build_object('order_id', ord.id, 'status', ord.status), 'Only paid orders can be refunded.'
    );
  end if;
  refund := billing.request_refund(applied_payment_id, refund_order.amount, 'staff', core.current_user_id());
  perform pg_catalog.set_config('response.status', '202', true);
  return refund;
end;
$$;

comment on function api.refund_order(bigint, bigint) is
'Staff: requests a refund of a paid order''s payment, of amount (minor units) or of everything left when
omitted. Answers 202 with the pending refund; the gateway carries it out at Stripe, and the order becomes
refunded once Stripe confirms the full amount (partial refunds keep it paid, with refunded_minor).
409 order_not_refundable (not paid) or refund_exceeds_balance; 404 unknown order.';

grant execute on function api.refund_order(bigint, bigint) to app_admin;

create function api.order_payments(order_id bigint) returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- row-level security: a customer finds only their own order; another's is exactly as missing
  if not exists (select from core.orders as o where o.id = order_payments.order_id) then
    perform core.raise_not_found(
      'order', order_payments.order_id, 'Check the order id.',
      message => pg_catalog.format('Order %s does not exist.', order_payments.order_id)
    );
  end if;
  return (
    select
      coalesce(pg_catalog.jsonb_agg(
        pg_catalog.jsonb_build_object(
          'id', p.id,
          'order_id', p.order_id,
          'attempt', p.attempt,
          'status', p.status,
          'amount_minor', p.amount_minor,
          'currency', p.currency,
          'refunded_minor', p.refunded_minor,
          'checkout_url', case
            when p.status = 'open' and (p.expires_at is null or p.expires_at > pg_catalog.now()) then p.checkout_url
          end,
          'expires_at', p.expires_at,
          'created_at', p.created_at
        ) order by p.attempt
      ), '[]'::jsonb)
    from core.payments as p
    where p.order_id = order_payments.order_id
  );
end;
$$;

comment on function api.order_payments(bigint) is
'The payment attempts of an order, oldest first: [{id, order_id, attempt, status, amount_minor, currency,
refunded_minor, checkout_url (only while the attempt is open and its session unexpired), expires_at,
created_at}]. Customers see their own orders only; another''s order is 404 like a missing one.
@route GET /orders/{order_id}/payments';

grant execute on function api.order_payments(bigint) to app_readwrite, app_admin;

-- grants: the billing schema is the Stripe paths' alone ------------------------------------------------------

grant execute on function billing.begin_payment(bigint) to app_payments;
grant execute on function billing.attach_checkout_session(bigint, text, text, timestamptz) to app_payments;
grant execute on function billing.mark_payment_completed(bigint, bigint, text, text, text) to app_payments;
grant execute on function billing.mark_payment_failed(bigint, text) to app_payments;
grant execute on function billing.mark_payment_expired(bigint) to app_payments;
grant execute on function billing.mark_payment_canceled(bigint, text) to app_payments;
grant execute on function billing.record_stripe_event(text, text, jsonb, timestamptz, boolean) to app_payments;
grant execute on function billing.finish_stripe_event(text, text, bigint) to app_payments;
grant execute on function billing.deferred_refund_events(text) to app_payments;
grant execute on function billing.find_payment(text, text, bigint) to app_payments;
grant execute on function billing.stale_payments(interval) to app_payments;
grant execute on function billing.request_refund(bigint, bigint, text, bigint) to app_payments;
grant execute on function billing.pending_refunds() to app_payments;
grant execute on function billing.attach_refund(bigint, text) to app_payments;
grant execute on function billing.mark_refund_succeeded(text, bigint, text) to app_payments;
grant execute on function billing.mark_refund_failed(text, text, bigint) to app_payments;

commit;
