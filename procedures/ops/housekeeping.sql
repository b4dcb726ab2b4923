-- Deploy commercecore:procedures/ops/housekeeping to pg
-- requires: schema/housekeeping
-- requires: schema/auth
-- requires: schema/login_failures
-- requires: schema/idempotency
-- Purging what has served its time, one batch per call so that no transaction holds many row locks or
-- writes much WAL at once: expired sessions, login failures idle for a day, idempotency keys past 24 hours.
-- `commercecore jobs run` calls ops.purge_batch until a batch comes back short; the gateway reads the totals
-- for /metrics through auth.purge_totals.
begin;

set local role app_owner;

create or replace function ops.purge_batch(target text, batch_size integer default 1000) returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  purged integer;
begin
  if purge_batch.batch_size is null or purge_batch.batch_size not between 1 and 100000 then
    raise exception using
      errcode = '22023',
      message = 'batch_size must be between 1 and 100000.';
  end if;
  -- skip locked: a row a request holds now is left for the next run instead of waited for
  case purge_batch.target
    when 'auth.sessions' then
      -- expired ones only: a revoked session stays, for the record, until it would have expired
      delete from auth.sessions as s
      where s.jti in (
        select e.jti from auth.sessions as e
        where e.expires_at <= pg_catalog.now()
        order by e.expires_at
        limit purge_batch.batch_size
        for update skip locked
      );
    when 'auth.login_failures' then
      delete from auth.login_failures as f
      where (f.email_hash, f.client) in (
        select o.email_hash, o.client from auth.login_failures as o
        where o.last_failed_at < pg_catalog.now() - interval '1 day'
          and (o.retry_at is null or o.retry_at <= pg_catalog.now())
        order by o.last_failed_at
        limit purge_batch.batch_size
        for update skip locked
      );
    when 'core.idempotency_keys' then
      -- api.create_order forgets a key older than 24 hours anyway: its row only takes space
      delete from core.idempotency_keys as k
      where (k.user_id, k.endpoint, k.key) in (
        select o.user_id, o.endpoint, o.key from core.idempotency_keys as o
        where o.created_at < pg_catalog.now() - interval '24 hours'
        order by o.created_at
        limit purge_batch.batch_size
        for update skip locked
      );
    else
      raise exception using
        errcode = '22023',
        message = pg_catalog.format('%L is not a purged table.', purge_batch.target),
        hint = 'One of auth.sessions, auth.login_failures, core.idempotency_keys.';
  end case;
  get diagnostics purged = row_count;
  update ops.purged_rows as p
  set purged_rows = p.purged_rows + purged, last_purged_at = pg_catalog.now()
  where p.table_name = purge_batch.target;
  return purged;
end;
$$;

comment on function ops.purge_batch(text, integer) is
'Deletes at most batch_size rows that have served their time from one table (auth.sessions: expired;
auth.login_failures: idle for a day, no delay running; core.idempotency_keys: older than 24 hours), adds
them to ops.purged_rows and returns how many. Call it until it returns less than batch_size, one
transaction per call. Unknown table or batch_size outside 1..100000 -> 22023.';

grant execute on function ops.purge_batch(text, integer) to app_dba;

create or replace function auth.purge_totals() returns table (table_name text, purged_rows bigint)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select p.table_name, p.purged_rows from ops.purged_rows as p order by p.table_name
$$;

comment on function auth.purge_totals() is
'For the gateway''s /metrics (commercecore_purged_rows_total): the rows ops.purge_batch has deleted so
far, per table.';

grant execute on function auth.purge_totals() to authenticator;

commit;
