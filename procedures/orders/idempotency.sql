-- Deploy commercecore:procedures/orders/idempotency to pg
-- requires: schema/idempotency
-- requires: procedures/errors
-- The Idempotency-Key of POST /orders, as three steps of api.create_order: the key checked and the request
-- hashed, the stored response found (under the key's lock, so a concurrent duplicate waits for the first
-- request and then replays it), and the new response stored with the order, in the same transaction.
-- Keys are kept 24 hours: an older one is forgotten and the key starts afresh.
begin;

set local role app_owner;

create or replace function core.idempotency_hash(key text, request jsonb)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if length(idempotency_hash.key) not between 1 and 255 then
    perform core.raise_invalid(
      'idempotency_key', 'The idempotency key must be 1 to 255 characters.',
      hint => 'Send a fresh random key (a UUID) per order in the Idempotency-Key header.'
    );
  end if;
  return encode(sha256(convert_to(idempotency_hash.request::text, 'UTF8')), 'hex');
end;
$$;

comment on function core.idempotency_hash(text, jsonb) is
'The SHA-256 (hex) of a request''s canonical body, stored with its idempotency key; PT422 invalid_input
(field idempotency_key) unless the key has 1 to 255 characters.';

create or replace function core.replay_idempotent(user_id bigint, endpoint text, key text, request_hash text)
returns core.idempotency_keys
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  stored core.idempotency_keys;
begin
  -- one request per key at a time: a concurrent duplicate waits here, then finds the stored response
  perform pg_advisory_xact_lock(
    hashtextextended(
      format('%s|%s|%s', replay_idempotent.user_id, replay_idempotent.endpoint, replay_idempotent.key), 0
    )
  );
  select k.* into stored
  from core.idempotency_keys as k
  where
    k.user_id = replay_idempotent.user_id
    and k.endpoint = replay_idempotent.endpoint
    and k.key = replay_idempotent.key;
  if found and stored.created_at < now() - interval '24 hours' then
    -- keys are kept 24 hours: an older one is forgotten and the key starts afresh
    delete from core.idempotency_keys as k
    where
      k.user_id = replay_idempotent.user_id
      and k.endpoint = replay_idempotent.endpoint
      and k.key = replay_idempotent.key;
    return null;
  elsif found and stored.request_hash <> replay_idempotent.request_hash then
    perform core.raise_error(
      '422', 'idempotency_key_reused', 'This idempotency key was already used for another request.',
      jsonb_build_object('field', 'idempotency_key'),
      'Use a new key for a new order; retry with the same key only with the same body.'
    );
  end if;
  return stored;
end;
$$;

comment on function core.replay_idempotent(bigint, text, text, text) is
'Takes the lock of one user''s idempotency key on an endpoint (held to the commit) and returns the response
stored under it within 24 hours, or null (no key, or a key older than 24 hours, which is forgotten).
PT422 idempotency_key_reused when the key was stored with another request_hash.';

create or replace function core.store_idempotent(
  user_id bigint, endpoint text, key text, request_hash text, status_code integer, response jsonb
)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  stored_rows integer;
begin
  insert into core.idempotency_keys (user_id, key, endpoint, request_hash, status_code, response)
  values (
    store_idempotent.user_id, store_idempotent.key, store_idempotent.endpoint, store_idempotent.request_hash,
    store_idempotent.status_code, store_idempotent.response
  )
  on conflict do nothing;
  get diagnostics stored_rows = row_count;
  if stored_rows = 0 then
    -- only when the key's row appeared after our look-up (a REPEATABLE READ caller): refuse, never doubled
    perform core.raise_error(
      '409', 'idempotency_key_in_use', 'Another request with this idempotency key is being processed.',
      jsonb_build_object('field', 'idempotency_key'), 'Retry the request: it will return the stored response.'
    );
  end if;
end;
$$;

comment on function core.store_idempotent(bigint, text, text, text, integer, jsonb) is
'Stores the response of a request sent with an idempotency key, for core.replay_idempotent; PT409
idempotency_key_in_use when another transaction stored the key since this one looked it up.';

commit;
