-- Verify commercecore:procedures/billing/refund_states on pg
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
  'billing.mark_refund_succeeded(text, bigint, text)'::regprocedure,
  'billing.mark_refund_failed(text, text, bigint)'::regprocedure
);

select 1 / (not has_function_privilege('app_payments', 'billing.apply_refunded_amount(core.payments, bigint)', 'execute'))::int;

-- an unknown Stripe refund without a payment intent is not found
do $$
begin
  perform billing.mark_refund_succeeded('re_verify_unknown');
  raise exception 'an unknown refund succeeded';
exception when sqlstate 'PT404' then
  null;
end;
$$;

rollback;
