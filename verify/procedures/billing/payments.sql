-- Verify commercecore:procedures/billing/payments on pg
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
  'billing.find_payment(text, text, bigint)'::regprocedure,
  'billing.stale_payments(interval)'::regprocedure
);

select 1 / (not has_function_privilege('app_payments', 'billing.payment_json(core.payments)', 'execute'))::int;
select 1 / (billing.find_payment(payment_id => -1) is null)::int;

rollback;
