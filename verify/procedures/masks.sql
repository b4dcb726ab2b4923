-- Verify commercecore:procedures/masks on pg
begin;

select 1 / (core.mask_provider_id('cs_test_a1b2c3d4e5f61a2b') = 'cs_…1a2b')::int;
select 1 / (core.mask_provider_id('pi_3Nxyz9876') = 'pi_…9876')::int;
select 1 / (core.mask_provider_id('abcdefghijkl') = '…ijkl')::int;
select 1 / (core.mask_email('john@example.com') = 'j***@example.com')::int;
select
  1 / (
    audit.mask_row('{"checkout_url": "https://pay.test/c/cs_test_a1b2c3d4e5f61a2b", "payment_intent_id": "pi_x"}')
    = '{"checkout_url": "https://pay.test/c/cs_…1a2b", "payment_intent_id": "pi_…"}'
  )::int;
select 1 / (audit.mask_row('{"user": {"email": "john@example.com"}}') = '{"user": {"email": "j***@example.com"}}')::int;

select 1 / has_function_privilege('app_dba', 'audit.mask_row(jsonb)', 'execute')::int;
select 1 / (not has_function_privilege('app_dba', 'core.mask_email(text)', 'execute'))::int;

rollback;
