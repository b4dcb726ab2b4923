-- Deploy commercecore:views/payments_safe to pg
-- requires: schema/payments
-- requires: schema/users
-- Payments for analytics, with nothing that identifies a customer or lets anyone act on Stripe: provider ids
-- keep their prefix and last 4 characters, emails their first letter and domain. Staff and DBAs only.
begin;

set local role app_owner;

create function core.mask_provider_id(provider_id text) returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  -- cs_test_a1B2...9f1a2b -> cs_…1a2b: the object type stays readable, the id is not usable
  select case
    when provider_id is null then null
    when pg_catalog.strpos(provider_id, '_') = 0 then '…' || pg_catalog.right(provider_id, least(4, pg_catalog.length(provider_id) / 3))
    when pg_catalog.length(provider_id) <= 8 then pg_catalog.split_part(provider_id, '_', 1) || '_…'
    else pg_catalog.split_part(provider_id, '_', 1) || '_…' || pg_catalog.right(provider_id, 4)
  end
$$;

comment on function core.mask_provider_id(text) is
'Masks a Stripe id for reports: its type prefix and last 4 characters (cs_test_a1b2…1a2b -> cs_…1a2b).';

create function core.mask_email(email text) returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  -- john@example.com -> j***@example.com
  select case
    when email is null then null
    when pg_catalog.strpos(email, '@') < 2 then '***'
    else pg_catalog.left(email, 1) || '***@' || pg_catalog.split_part(email, '@', 2)
  end
$$;

comment on function core.mask_email(text) is 'Masks an email for reports: the first letter and the domain (j***@example.com).';

-- the rows come from a definer function: the row-level security policies of the core tables call core
-- functions that the readers may not execute (a view checks function privileges as its caller); it lives in
-- ops, where staff may call read-only functions and DBAs any, and is not an RPC of the api
create function ops.payments_safe_rows() returns table (
  id bigint,
  order_id bigint,
  user_id bigint,
  attempt integer,
  status text,
  amount_minor bigint,
  currency text,
  refunded_minor bigint,
  applied boolean,
  refund_required boolean,
  refund_reason text,
  failure_reason text,
  provider text,
  created_at timestamptz,
  updated_at timestamptz,
  succeeded_at timestamptz,
  expires_at timestamptz,
  checkout_session_id text,
  payment_intent_id text,
  customer_email text,
  order_status text,
  order_total_minor bigint
)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select
    p.id, p.order_id, p.user_id, p.attempt, p.status, p.amount_minor, p.currency, p.refunded_minor, p.applied,
    p.refund_required, p.refund_reason, p.failure_reason, p.provider, p.created_at, p.updated_at,
    p.succeeded_at, p.expires_at,
    core.mask_provider_id(p.checkout_session_id),
    core.mask_provider_id(p.payment_intent_id),
    core.mask_email(u.email),
    o.status,
    o.total_minor
  from core.payments as p
  join core.orders as o on o.id = p.order_id
  join core.users as u on u.id = p.user_id
  -- as the tables' policies: staff and back-office sessions (app_dba, psql) only, never a customer
  where core.is_admin() or core.is_service()
$$;

comment on function ops.payments_safe_rows() is
'The rows of api.v_payments_safe (staff and DBAs only): payments with Stripe ids and emails masked. Not in
api, so not an RPC of the gateway.';

grant execute on function ops.payments_safe_rows() to app_admin, app_dba;

create view api.v_payments_safe with (security_barrier) as
select
  r.id,
  r.order_id,
  r.user_id,
  r.attempt,
  r.status,
  r.amount_minor,
  r.currency,
  r.refunded_minor,
  r.applied,
  r.refund_required,
  r.refund_reason,
  r.failure_reason,
  r.provider,
  r.created_at,
  r.updated_at,
  r.succeeded_at,
  r.expires_at,
  r.checkout_session_id,
  r.payment_intent_id,
  r.customer_email,
  r.order_status,
  r.order_total_minor
from ops.payments_safe_rows() as r;

comment on view api.v_payments_safe is
'Payment attempts for analytics (staff and DBAs): amounts, states and refund flags, with Stripe ids masked to
their prefix and last 4 characters and customer emails masked (j***@example.com). No checkout urls.
@order id, order_id, user_id, status, amount_minor, created_at, updated_at, succeeded_at';
comment on column api.v_payments_safe.checkout_session_id is 'Masked Stripe Checkout Session id (cs_…1a2b).';
comment on column api.v_payments_safe.payment_intent_id is 'Masked Stripe PaymentIntent id (pi_…1a2b).';
comment on column api.v_payments_safe.customer_email is 'Masked email of the paying customer (j***@example.com).';

grant select on api.v_payments_safe to app_admin, app_dba;

-- app_dba reads this view from the api schema; it is granted nothing else there
grant usage on schema api to app_dba;

commit;
