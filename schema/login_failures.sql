-- Deploy commercecore:schema/login_failures to pg
-- requires: schema/auth
-- Failed logins per (email address, client). Each pair gets a few free attempts, then a delay that doubles
-- with every further failure up to a cap: a guesser at one address slows to a crawl, while the owner of the
-- account, at any other address, signs in at once. Nothing is counted on the account itself, so failing on
-- purpose locks no one out, and a registered address is counted like an unknown one. Only a hash of the
-- address is kept; rows idle for a day are purged by `commercecore jobs run`.
begin;

set local role app_owner;

create table auth.login_failures (
  email_hash bytea not null,
  client inet not null,
  failed_attempts integer not null default 0,
  last_failed_at timestamptz not null default now(),
  retry_at timestamptz,
  constraint login_failures_pkey primary key (email_hash, client),
  constraint login_failures_email_hash_check check (length(email_hash) = 32),
  constraint login_failures_failed_attempts_check check (failed_attempts >= 0)
);

comment on table auth.login_failures is
'Consecutive failed logins per email address and client: the free attempts, then a growing delay before
the next attempt of that pair (auth.record_login_failure). A success of the pair deletes its row.';
comment on column auth.login_failures.email_hash is 'SHA-256 of the trimmed, lower-cased email address.';
comment on column auth.login_failures.client is
'The client as the gateway keys it: its IPv4 address, or the /64 network of its IPv6 address.';
comment on column auth.login_failures.last_failed_at is
'The latest failure; a row idle for a day is forgotten (a new failure starts a new count) and purged.';
comment on column auth.login_failures.retry_at is
'The pair''s next attempt is refused (429) before then; null during the free attempts.';

create index login_failures_last_failed_at_idx on auth.login_failures (last_failed_at);

commit;
