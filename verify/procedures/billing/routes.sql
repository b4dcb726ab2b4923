-- Verify commercecore:procedures/billing/routes on pg
begin;

select 1 / has_function_privilege('app_admin', 'api.refund_order(bigint, bigint, text)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.refund_order(bigint, bigint, text)', 'execute'))::int;
select 1 / (to_regprocedure('api.refund_order(bigint, bigint)') is null)::int;
select 1 / has_function_privilege('app_readwrite', 'api.order_payments(bigint)', 'execute')::int;
select 1 / has_function_privilege('app_admin', 'api.order_payments(bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readonly', 'api.order_payments(bigint)', 'execute'))::int;

-- an order that was never paid cannot be refunded
insert into core.users (email) values ('verify-routes@example.com');
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-routes@example.com';
do $$
begin
  perform api.refund_order((select o.id from core.orders as o join core.users as u on u.id = o.user_id
    where u.email = 'verify-routes@example.com'));
  raise exception 'an unpaid order was refunded';
exception when sqlstate 'PT409' then
  null;
end;
$$;

rollback;
