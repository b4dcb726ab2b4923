-- Deploy commercecore:views/payments_safe to pg
-- requires: procedures/ops/payments_safe
-- Payments for analytics, with nothing that identifies a customer or lets anyone act on Stripe: provider ids
-- keep their prefix and last 4 characters, emails their first letter and domain (procedures/masks). Staff and
-- DBAs only.
begin;

set local role app_owner;

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
