-- Deploy commercecore:schema/payments to pg
-- requires: schema/orders
-- requires: procedures/context
-- requires: schema/updated_at
-- Payment attempts (one row each), refunds, and the Stripe event inbox.
begin;

set local role app_owner;

create table core.payments (
  id bigint generated always as identity,
  order_id bigint not null,
  user_id bigint not null,
  attempt integer not null,
  status text not null default 'created',
  amount_minor bigint not null,
  currency text not null,
  provider text not null default 'stripe',
  checkout_session_id text,
  checkout_url text,
  payment_intent_id text,
  expires_at timestamptz,
  applied boolean not null default false,
  refund_required boolean not null default false,
  refund_reason text,
  refunded_minor bigint not null default 0,
  failure_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  succeeded_at timestamptz,
  constraint payments_pkey primary key (id),
  constraint payments_order_id_attempt_key unique (order_id, attempt),
  constraint payments_checkout_session_id_key unique (checkout_session_id),
  constraint payments_order_id_fkey foreign key (order_id, user_id)
  references core.orders (id, user_id) on delete restrict,
  constraint payments_status_check check (
    status in ('created', 'open', 'succeeded', 'failed', 'expired', 'canceled', 'refunded')
  ),
  constraint payments_amount_minor_check check (amount_minor >= 0),
  constraint payments_currency_check check (currency ~ '^[A-Z]{3}$'),
  constraint payments_provider_check check (provider = 'stripe'),
  constraint payments_refunded_minor_check check (refunded_minor >= 0 and refunded_minor <= amount_minor),
  constraint payments_attempt_check check (attempt >= 1),
  constraint payments_applied_check check (not applied or status in ('succeeded', 'refunded')),
  constraint payments_refund_reason_check check (
    refund_reason in ('superseded', 'amount_mismatch', 'currency_mismatch', 'order_not_pending', 'staff')
  )
);

comment on table core.payments is
'Payment attempts, one row each: created -> open -> succeeded | failed | expired | canceled; succeeded -> refunded.
States only move forward.';
comment on column core.payments.attempt is 'Attempt number within the order (1, 2, ...); the newest attempt is the live one.';
comment on column core.payments.applied is 'True for the one successful payment that marked the order paid.';
comment on column core.payments.refund_required is
'A successful payment that could not apply (superseded, changed amount, order no longer pending): it must be
refunded, and is, automatically.';
comment on column core.payments.refunded_minor is 'Amount refunded so far on this payment.';

create unique index payments_one_applied_per_order on core.payments (order_id) where applied;
comment on index core.payments_one_applied_per_order is 'At most one payment pays an order.';
create index payments_user_id_idx on core.payments (user_id, created_at desc);
create index payments_open_created_at_idx on core.payments (created_at) where status in ('created', 'open');
create index payments_refund_required_idx on core.payments (id) where refund_required;
create index payments_payment_intent_id_idx on core.payments (payment_intent_id) where payment_intent_id is not null;

create trigger payments_set_updated_at before update on core.payments
for each row execute function core.set_updated_at();

alter table core.payments enable row level security;
alter table core.payments force row level security;

create policy payments_owner on core.payments
using (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()))
with check ((select core.is_admin()) or (select core.is_service()));

comment on policy payments_owner on core.payments is
'A customer sees their own payments; only staff and the payment paths write them.';

create table core.refunds (
  id bigint generated always as identity,
  payment_id bigint not null,
  amount_minor bigint not null,
  currency text not null,
  status text not null default 'pending',
  reason text not null,
  stripe_refund_id text,
  idempotency_key text not null,
  failure_reason text,
  requested_by bigint,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint refunds_pkey primary key (id),
  constraint refunds_payment_id_fkey foreign key (payment_id) references core.payments (id) on delete restrict,
  constraint refunds_stripe_refund_id_key unique (stripe_refund_id),
  constraint refunds_idempotency_key_key unique (idempotency_key),
  constraint refunds_amount_minor_check check (amount_minor > 0),
  constraint refunds_currency_check check (currency ~ '^[A-Z]{3}$'),
  constraint refunds_status_check check (status in ('pending', 'succeeded', 'failed')),
  constraint refunds_reason_check check (
    reason in ('superseded', 'amount_mismatch', 'currency_mismatch', 'order_not_pending', 'staff')
  )
);

comment on table core.refunds is 'Refunds asked of Stripe: pending until Stripe confirms (charge.refunded) or fails.';
comment on column core.refunds.idempotency_key is 'The Idempotency-Key sent to Stripe, so a retried refund is never doubled.';

create index refunds_payment_id_idx on core.refunds (payment_id);
create index refunds_pending_idx on core.refunds (created_at) where status = 'pending';

create trigger refunds_set_updated_at before update on core.refunds
for each row execute function core.set_updated_at();

create table core.stripe_events (
  id text not null,
  type text not null,
  payload jsonb not null,
  livemode boolean not null default false,
  stripe_created_at timestamptz,
  received_at timestamptz not null default now(),
  processed_at timestamptz,
  outcome text,
  payment_id bigint,
  constraint stripe_events_pkey primary key (id),
  constraint stripe_events_id_check check (id ~ '^evt_[A-Za-z0-9_]+$'),
  constraint stripe_events_payment_id_fkey foreign key (payment_id) references core.payments (id) on delete restrict
);

comment on table core.stripe_events is
'The inbox of Stripe webhook events: stored before the webhook is acknowledged; a unique event id makes a
redelivery a no-op.';
comment on column core.stripe_events.outcome is 'What processing did: the transition applied, or why none was.';

create index stripe_events_payment_id_idx on core.stripe_events (payment_id) where payment_id is not null;
create index stripe_events_received_at_idx on core.stripe_events (received_at);
-- refund events waiting for their payment intent to become known (billing.deferred_refund_events)
create index stripe_events_deferred_intent_idx on core.stripe_events (
  (coalesce(payload #>> '{data,object,payment_intent,id}', payload #>> '{data,object,payment_intent}'))
) where outcome = 'deferred:unknown_payment_intent';

commit;
