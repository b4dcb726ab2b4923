-- Deploy commercecore:procedures/billing/inbox to pg
-- requires: schema/payments
-- requires: procedures/errors
-- The inbox of Stripe webhook events: an event is stored before the webhook is acknowledged, a redelivery is
-- a no-op, and refund events that overtook their payment wait for it.
begin;

set local role app_owner;

create or replace function billing.record_stripe_event(
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

grant execute on function billing.record_stripe_event(text, text, jsonb, timestamptz, boolean) to app_payments;

create or replace function billing.finish_stripe_event(id text, outcome text, payment_id bigint default null) returns void
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

grant execute on function billing.finish_stripe_event(text, text, bigint) to app_payments;

create or replace function billing.deferred_refund_events(payment_intent_id text)
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

grant execute on function billing.deferred_refund_events(text) to app_payments;

commit;
