-- Verify commercecore:procedures/orders/idempotency on pg
begin;

insert into core.users (email) values ('verify-idempotency@example.com');
select set_config('verify.user', id::text, true) from core.users where email = 'verify-idempotency@example.com';
select set_config('verify.hash', core.idempotency_hash('verify-key', '{"items": []}'), true);
select 1 / (current_setting('verify.hash') ~ '^[0-9a-f]{64}$')::int;

-- nothing stored yet; once stored, the same key and body replay it
select
  1 / ((core.replay_idempotent(
    current_setting('verify.user')::bigint, 'POST /orders', 'verify-key', current_setting('verify.hash')
  )).key is null)::int;
select core.store_idempotent(
  current_setting('verify.user')::bigint, 'POST /orders', 'verify-key', current_setting('verify.hash'), 201, '{"id": 1}'
);
select
  1 / ((core.replay_idempotent(
    current_setting('verify.user')::bigint, 'POST /orders', 'verify-key', current_setting('verify.hash')
  )).response = '{"id": 1}')::int;

-- the same key with another body is refused
do $$
begin
  perform core.replay_idempotent(current_setting('verify.user')::bigint, 'POST /orders', 'verify-key', repeat('0', 64));
  raise exception 'a key was replayed for another body';
exception when sqlstate 'PT422' then
  null;
end;
$$;

rollback;
