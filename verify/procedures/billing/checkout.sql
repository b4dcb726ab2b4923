-- Verify commercecore:procedures/billing/checkout on pg
begin;

-- the entry points exist, only app_payments may call them, and they are security definer
select
  1 / (
    count(*) = 2
    and bool_and(p.prosecdef)
    and bool_and(has_function_privilege('app_payments', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_readwrite', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_admin', p.oid, 'execute'))
    and not bool_or(has_function_privilege('public', p.oid, 'execute'))
  )::int
from pg_catalog.pg_proc as p
where p.oid in (
  'billing.begin_payment(bigint)'::regprocedure,
  'billing.attach_checkout_session(bigint, text, text, timestamptz)'::regprocedure
);

-- behaviour: an attempt of a pending order, for its total; its Checkout Session opens it
insert into core.users (email) values ('verify-checkout@example.com');
insert into core.products (sku, name, price_minor) values ('VERIFY-CHECKOUT', 'checkout', 700);
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-checkout@example.com';
select set_config('verify.order', id::text, true) from core.orders
where user_id = (select id from core.users where email = 'verify-checkout@example.com');
insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor)
select o.id as order_id, p.id as product_id, o.user_id, 1 as quantity, p.price_minor as unit_price_minor
from core.orders as o, core.products as p
where o.id = current_setting('verify.order')::bigint and p.sku = 'VERIFY-CHECKOUT';
select set_config('verify.payment', billing.begin_payment(current_setting('verify.order')::bigint) ->> 'payment_id', true);
select 1 / (amount_minor = 700 and status = 'created')::int from core.payments
where id = current_setting('verify.payment')::bigint;
select
  1 / (billing.attach_checkout_session(
    current_setting('verify.payment')::bigint, 'cs_verify_checkout', 'https://pay.test/cs_verify_checkout', now() + interval '1 hour'
  ) ->> 'status' = 'open')::int;

rollback;
