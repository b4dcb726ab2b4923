-- Deploy commercecore:schema/login_failures to pg
-- requires: schema/auth
-- Failed logins for email addresses that have no account. They are counted and locked exactly like an
-- account's (auth.credentials.failed_attempts, locked_until), so that the lockout never tells an attacker
-- whether an address is registered. Only a hash of the address is kept; stale rows are purged by the jobs.
begin;

set local role app_owner;

create table auth.login_failures (
  email_hash bytea not null,
  failed_attempts integer not null default 0,
  locked_until timestamptz,
  last_failed_at timestamptz not null default now(),
  constraint login_failures_pkey primary key (email_hash),
  constraint login_failures_email_hash_check check (length(email_hash) = 32),
  constraint login_failures_failed_attempts_check check (failed_attempts >= 0)
);

comment on table auth.login_failures is
'Consecutive failed logins for addresses without an account, counted like auth.credentials so that a
lockout does not reveal whether an address is registered.';
comment on column auth.login_failures.email_hash is 'SHA-256 of the trimmed, lower-cased email address.';
comment on column auth.login_failures.last_failed_at is 'The latest failure; rows idle for a day are purged.';

create index login_failures_last_failed_at_idx on auth.login_failures (last_failed_at);

commit;
