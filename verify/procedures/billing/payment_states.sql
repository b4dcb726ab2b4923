-- Verify commercecore:procedures/billing/payment_states on pg
begin;

-- the entry points exist, only app_payments may call them, and they are security definer
select
  1 / (
    count(*) = 4
    and bool_and(p.prosecdef)
    and bool_and(has_function_privilege('app_payments', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_readwrite', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_admin', p.oid, 'execute'))
    and not bool_or(has_function_privilege('public', p.oid, 'execute'))
  )::int
from pg_catalog.pg_proc as p
where p.oid in (
  'billing.mark_payment_completed(bigint, bigint, text, text, text)'::regprocedure,
  'billing.mark_payment_failed(bigint, text)'::regprocedure,
  'billing.mark_payment_expired(bigint)'::regprocedure,
  'billing.mark_payment_canceled(bigint, text)'::regprocedure
);

select 1 / (not has_function_privilege('app_payments', 'billing.close_payment(bigint, text, text)', 'execute'))::int;

-- behaviour: a success for the order's total pays it; a late expiry changes nothing
insert into core.users (email) values ('verify-states@example.com');
insert into core.orders (user_id, currency, total_minor)
select id as user_id, 'EUR' as currency, 0 as total_minor from core.users where email = 'verify-states@example.com';
insert into core.payments (order_id, user_id, attempt, status, amount_minor, currency)
select o.id as order_id, o.user_id, 1 as attempt, 'open' as status, 0 as amount_minor, 'EUR' as currency
from core.orders as o where o.user_id = (select id from core.users where email = 'verify-states@example.com');
select set_config('verify.payment', p.id::text, true) from core.payments as p
where p.user_id = (select id from core.users where email = 'verify-states@example.com');
select 1 / (billing.mark_payment_completed(current_setting('verify.payment')::bigint, 0, 'eur') ->> 'outcome' = 'paid')::int;
select 1 / (billing.mark_payment_expired(current_setting('verify.payment')::bigint) ->> 'outcome' = 'unchanged')::int;
select 1 / (o.status = 'paid')::int from core.orders as o
where o.user_id = (select id from core.users where email = 'verify-states@example.com');

rollback;
