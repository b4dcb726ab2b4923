-- Verify commercecore:schema/payments on pg
begin;

select id, order_id, user_id, attempt, status, amount_minor, currency, applied, refund_required
from core.payments where false;
select id, payment_id, amount_minor, status, stripe_refund_id, idempotency_key from core.refunds where false;
select id, type, payload, processed_at, outcome from core.stripe_events where false;

select 1 / (relrowsecurity and relforcerowsecurity)::int from pg_catalog.pg_class where oid = 'core.payments'::regclass;

rollback;
