-- Verify commercecore:schema/idempotency on pg
begin;

select user_id, key, endpoint, request_hash, status_code, response from core.idempotency_keys where false;

rollback;
