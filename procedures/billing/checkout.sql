-- Deploy commercecore:procedures/billing/checkout to pg
-- requires: procedures/billing/payments
-- requires: procedures/orders/limits
-- Checkout: a new attempt of a pending order, then the Stripe Checkout Session the gateway made for it.
-- The order row lock serialises the attempts of an order.
begin;

set local role app_owner;

create or replace function billing.begin_payment(order_id bigint) returns jsonb
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

grant execute on function billing.begin_payment(bigint) to app_payments;

create or replace function billing.attach_checkout_session(
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


grant execute on function billing.attach_checkout_session(bigint, text, text, timestamptz) to app_payments;

commit;
