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

-- behaviour: the masks
select 1 / (core.mask_provider_id('cs_test_a1b2c3d4e5f61a2b') = 'cs_…1a2b')::int;
select 1 / (core.mask_provider_id('pi_3Nxyz9876') = 'pi_…9876')::int;
select 1 / (core.mask_provider_id('abcdefghijkl') = '…ijkl')::int;
select 1 / (core.mask_email('john@example.com') = 'j***@example.com')::int;

rollback;
