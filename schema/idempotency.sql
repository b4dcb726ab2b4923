-- Deploy commercecore:schema/idempotency to pg
-- requires: schema/users
-- requires: procedures/context
-- Idempotency keys of POST requests: the same key and body replay the stored response.
begin;

set local role app_owner;

create table core.idempotency_keys (
  user_id bigint not null,
  key text not null,
  endpoint text not null,
  request_hash text not null,
  status_code integer not null,
  response jsonb not null,
  created_at timestamptz not null default now(),
  constraint idempotency_keys_pkey primary key (user_id, endpoint, key),
  constraint idempotency_keys_user_id_fkey foreign key (user_id) references core.users (id) on delete cascade,
  constraint idempotency_keys_key_check check (length(key) between 1 and 255),
  constraint idempotency_keys_request_hash_check check (request_hash ~ '^[0-9a-f]{64}$')
);

comment on table core.idempotency_keys is
'Responses of POST requests sent with an Idempotency-Key, per user and endpoint, kept 24 hours.';
comment on column core.idempotency_keys.request_hash is 'SHA-256 of the canonical request body: another body with the same key is refused.';

create index idempotency_keys_created_at_idx on core.idempotency_keys (created_at);

alter table core.idempotency_keys enable row level security;
alter table core.idempotency_keys force row level security;

create policy idempotency_keys_owner on core.idempotency_keys
using (user_id = (select core.current_user_id()) or (select core.is_service()))
with check (user_id = (select core.current_user_id()) or (select core.is_service()));

comment on policy idempotency_keys_owner on core.idempotency_keys is 'Keys are private to the user who sent them.';

commit;
