-- Verify commercecore:views/payments_safe on pg
begin;

select
  id, order_id, status, amount_minor, currency, refunded_minor, refund_required,
  checkout_session_id, payment_intent_id, customer_email
from api.v_payments_safe where false;

select 1 / has_table_privilege('app_admin', 'api.v_payments_safe', 'select')::int;
select 1 / has_table_privilege('app_dba', 'api.v_payments_safe', 'select')::int;
select 1 / has_schema_privilege('app_dba', 'api', 'usage')::int;
select 1 / (not has_table_privilege('app_readwrite', 'api.v_payments_safe', 'select'))::int;
select 1 / (not has_table_privilege('app_readonly', 'api.v_payments_safe', 'select'))::int;

rollback;
