-- Verify commercecore:procedures/billing/refunds on pg
begin;

-- the entry points exist, only app_payments may call them, and they are security definer
select
  1 / (
    count(*) = 3
    and bool_and(p.prosecdef)
    and bool_and(has_function_privilege('app_payments', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_readwrite', p.oid, 'execute'))
    and not bool_or(has_function_privilege('app_admin', p.oid, 'execute'))
    and not bool_or(has_function_privilege('public', p.oid, 'execute'))
  )::int
from pg_catalog.pg_proc as p
where p.oid in (
  'billing.request_refund(bigint, bigint, text, bigint)'::regprocedure,
  'billing.pending_refunds()'::regprocedure,
  'billing.attach_refund(bigint, text)'::regprocedure
);

select 1 / (not has_function_privilege('app_payments', 'billing.create_refund(core.payments, bigint, text, bigint)', 'execute'))::int;

-- an unknown payment cannot be refunded
do $$
begin
  perform billing.request_refund(-1);
  raise exception 'a refund of an unknown payment was requested';
exception when sqlstate 'PT404' then
  null;
end;
$$;

rollback;
