-- Verify commercecore:procedures/ops/payments_safe on pg
begin;

select 1 / has_function_privilege('app_admin', 'ops.payments_safe_rows()', 'execute')::int;
select 1 / has_function_privilege('app_dba', 'ops.payments_safe_rows()', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'ops.payments_safe_rows()', 'execute'))::int;

-- behaviour: the Stripe ids and the email come masked
insert into core.users (email) values ('verify-safe@example.com');
insert into core.orders (user_id, currency)
select id as user_id, 'EUR' as currency from core.users where email = 'verify-safe@example.com';
insert into core.payments (order_id, user_id, attempt, amount_minor, currency, checkout_session_id)
select o.id as order_id, o.user_id, 1 as attempt, 0 as amount_minor, 'EUR' as currency, 'cs_test_verifysafe1a2b' as checkout_session_id
from core.orders as o where o.user_id = (select id from core.users where email = 'verify-safe@example.com');
select 1 / (count(*) = 1)::int from ops.payments_safe_rows()
where customer_email = 'v***@example.com' and checkout_session_id = 'cs_…1a2b';

rollback;
