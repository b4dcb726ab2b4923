-- Revert commercecore:procedures/orders/idempotency from pg
begin;

drop function core.store_idempotent(bigint, text, text, text, integer, jsonb);
drop function core.replay_idempotent(bigint, text, text, text);
drop function core.idempotency_hash(text, jsonb);

commit;
