-- Deploy commercecore:procedures/auth/logins to pg
-- requires: schema/auth
-- requires: schema/login_failures
-- requires: schema/users_disabled
-- Login, as the gateway's login (authenticator) runs it before it switches to a request role: the account
-- of an address, and the failures of an (address, client) pair with the delay they impose on that client alone.
-- The database never sees a password: the gateway verifies the argon2id hash it gets here. Reworked after
-- @v1.0.0: a disabled account (core.users.disabled_at) is not found, so it signs in no more.
begin;

set local role app_owner;

create or replace function auth.login_lookup(email text)
returns table (user_id bigint, role text, password_hash text)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select u.id, u.role, c.password_hash
  from core.users as u
  join auth.credentials as c on c.user_id = u.id
  where u.email = pg_catalog.lower(pg_catalog.btrim(login_lookup.email)) and u.disabled_at is null
$$;

comment on function auth.login_lookup(text) is
'Login, step 1: the account of an email address (trimmed, lower-cased): user_id, role, password_hash. No
row for an unknown address, an account without a password or a disabled account: the gateway should still
verify the password against a dummy hash, so that the answer takes as long, and record the failure with
auth.record_login_failure.';

grant execute on function auth.login_lookup(text) to authenticator;

create or replace function auth.login_delay(email text, client inet)
returns table (failed_attempts integer, retry_at timestamptz)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select f.failed_attempts, case when f.retry_at > pg_catalog.now() then f.retry_at end
  from auth.login_failures as f
  where f.email_hash = pg_catalog.sha256(
      pg_catalog.convert_to(pg_catalog.lower(pg_catalog.btrim(coalesce(login_delay.email, ''))), 'UTF8')
    )
    and f.client = login_delay.client
    and f.last_failed_at >= pg_catalog.now() - interval '1 day'
$$;

comment on function auth.login_delay(text, inet) is
'Login, step 0: the failures of this email address from this client in a row (the pair''s row, none when
it has no recent failure) and retry_at while its delay runs (null otherwise). During the delay the gateway
answers 429 with Retry-After without checking the password. Other clients are not concerned: the owner
of the account signs in from another address at once.';

grant execute on function auth.login_delay(text, inet) to authenticator;

create or replace function auth.record_login_failure(
  email text,
  client inet,
  free_attempts integer default 3,
  delay_base interval default '5 seconds',
  delay_max interval default '15 minutes'
)
returns table (failed_attempts integer, retry_at timestamptz)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  pair_hash bytea := pg_catalog.sha256(
    pg_catalog.convert_to(pg_catalog.lower(pg_catalog.btrim(coalesce(record_login_failure.email, ''))), 'UTF8')
  );
  attempts integer;
  wait_seconds double precision;
  next_attempt timestamptz;
begin
  if record_login_failure.client is null
    or record_login_failure.free_attempts is null or record_login_failure.free_attempts < 1
    or record_login_failure.delay_base is null or record_login_failure.delay_base <= interval '0'
    or record_login_failure.delay_max is null or record_login_failure.delay_max < record_login_failure.delay_base
  then
    raise exception using
      errcode = '22023',
      message = 'client is required, free_attempts must be at least 1, delay_base positive and delay_max'
        || ' at least delay_base.';
  end if;

  -- a pair idle for a day starts a new count, as if its row had been purged already
  insert into auth.login_failures as f (email_hash, client, failed_attempts, last_failed_at)
  values (pair_hash, record_login_failure.client, 1, pg_catalog.now())
  on conflict on constraint login_failures_pkey do update
  set failed_attempts = case
      when f.last_failed_at < pg_catalog.now() - interval '1 day' then 1
      else f.failed_attempts + 1
    end,
    last_failed_at = pg_catalog.now(),
    retry_at = null
  returning f.failed_attempts into attempts;

  if attempts >= record_login_failure.free_attempts then
    -- base * 2^(failures past the free ones), capped; the exponent is bounded so that the product never
    -- overflows whatever the two intervals are
    wait_seconds := least(
      extract(epoch from record_login_failure.delay_max)::double precision,
      extract(epoch from record_login_failure.delay_base)::double precision
      * pg_catalog.power(2::double precision, least(attempts - record_login_failure.free_attempts, 60))
    );
    next_attempt := pg_catalog.now() + pg_catalog.make_interval(secs => wait_seconds);
    update auth.login_failures as f set retry_at = next_attempt
    where f.email_hash = pair_hash and f.client = record_login_failure.client;
  end if;

  failed_attempts := attempts;
  retry_at := next_attempt;
  return next;
end;
$$;

comment on function auth.record_login_failure(text, inet, integer, interval, interval) is
'Login failed (wrong password or unknown address) for this email address from this client: counts the
pair''s failures in a row. The first free_attempts are free; from the last free one on, the pair''s next
attempt must wait delay_base, doubling with every further failure, at most delay_max. Returns
(failed_attempts, retry_at), retry_at null while attempts are free. Unknown addresses are counted the same
way, so the answer never reveals whether an address is registered; nothing is counted on the account, so
no failure locks its owner out. Called only outside a running delay (the gateway refuses those attempts
unchecked), so a refused attempt never lengthens it.';

grant execute on function auth.record_login_failure(text, inet, integer, interval, interval) to authenticator;

create or replace function auth.record_login_success(user_id bigint, client inet) returns void
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from auth.login_failures as f
  using core.users as u
  where u.id = record_login_success.user_id
    and f.email_hash = pg_catalog.sha256(pg_catalog.convert_to(u.email, 'UTF8'))
    and f.client = record_login_success.client
$$;

comment on function auth.record_login_success(bigint, inet) is
'Login succeeded from this client: forgets the failures of the pair (the user''s address, this client).
Other clients'' failures stay: a success from one address does not free another (call it only after
auth.login_delay said no delay runs).';

grant execute on function auth.record_login_success(bigint, inet) to authenticator;

commit;
