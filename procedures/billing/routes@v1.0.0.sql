-- Deploy commercecore:procedures/billing/routes to pg
-- requires: procedures/billing/refunds
-- The two api functions staff and customers reach billing by: the refund of a paid order (staff), and the
-- payment attempts of an order.
begin;

set local role app_owner;

create or replace function api.refund_order(order_id bigint, amount bigint default null) returns jsonb
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

create or replace function api.order_payments(order_id bigint) returns jsonb
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

commit;
