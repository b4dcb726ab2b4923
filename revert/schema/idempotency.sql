-- Revert commercecore:schema/idempotency from pg
begin;

drop table core.idempotency_keys;

commit;
