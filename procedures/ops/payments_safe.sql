-- Deploy commercecore:procedures/ops/payments_safe to pg
-- requires: procedures/masks
-- requires: schema/payments
-- requires: schema/users
-- The rows of the payments report (views/payments_safe), masked, for staff and DBAs only.
begin;

set local role app_owner;

-- the rows come from a definer function: the row-level security policies of the core tables call core
-- functions that the readers may not execute (a view checks function privileges as its caller); it lives in
-- ops, where staff may call read-only functions and DBAs any, and is not an RPC of the api
create or replace function ops.payments_safe_rows() returns table (
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

commit;
