-- Deploy commercecore:procedures/ops to pg
-- requires: schema/extensions
-- requires: schema/orders
-- requires: schema/payments
-- requires: schema/errors
-- Operations: the expiry of unpaid orders, the daily sales report, and the monitoring views a DBA reads
-- (app_dba, member of pg_monitor). Reports are readable by staff too.
begin;

-- REFRESH MATERIALIZED VIEW CONCURRENTLY diffs through temporary tables, created as the view's owner;
-- PUBLIC has no TEMP on this database (roles/base), so the owner gets it here
do $$
begin
  execute pg_catalog.format('grant temporary on database %I to app_owner', current_database());
end;
$$;

set local role app_owner;

-- expiry of unpaid orders -----------------------------------------------------------------------------------

create function ops.expire_unpaid_orders(ttl interval default '30 minutes', max_age interval default null)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  age_limit interval := coalesce(expire_unpaid_orders.max_age, core.order_max_unpaid_age());
  cutoff timestamptz := pg_catalog.now() - expire_unpaid_orders.ttl;
  age_cutoff timestamptz;
  candidate bigint;
  ord core.orders;
  past_max_age boolean;
  live_attempts integer;
  locked_attempts integer;
  expired integer := 0;
begin
  if expire_unpaid_orders.ttl is null or expire_unpaid_orders.ttl <= interval '0' then
    perform core.raise_invalid(
      'ttl', 'The time to live of unpaid orders must be positive.',
      pg_catalog.jsonb_build_object('value', expire_unpaid_orders.ttl), 'For example ''30 minutes''.'
    );
  end if;
  if age_limit <= interval '0' then
    perform core.raise_invalid(
      'max_age', 'The maximum age of unpaid orders must be positive.',
      pg_catalog.jsonb_build_object('value', age_limit), 'For example ''60 minutes''.'
    );
  end if;
  age_cutoff := pg_catalog.now() - age_limit;

  for candidate in
    select o.id
    from core.orders as o
    where o.status = 'pending' and o.created_at <= greatest(cutoff, age_cutoff)
    order by o.id
  loop
    -- lock order, as in billing: the order's live attempts, then the order; anything busy (a webhook or a
    -- checkout at work on it right now) is skipped and looked at again by the next run
    select count(*) into live_attempts
    from core.payments as p where p.order_id = candidate and p.status in ('created', 'open');
    select count(*) into locked_attempts
    from (
      select from core.payments as p
      where p.order_id = candidate and p.status in ('created', 'open')
      order by p.id
      for update skip locked
    ) as locked;
    continue when locked_attempts < live_attempts;
    select o.* into ord from core.orders as o where o.id = candidate for update skip locked;
    continue when not found;

    -- decided under the locks. Past its maximum age an unpaid order ends whatever its attempts: checkouts
    -- never extend it (a payment that still arrives is refunded). Younger, it is stale after ttl, but never
    -- under a customer who has paid (a succeeded payment, e.g. one waiting for its refund, keeps the order
    -- for staff) or may be paying right now (an attempt started within the ttl, or a checkout session that
    -- has not expired at Stripe yet)
    continue when ord.status <> 'pending';
    past_max_age := ord.created_at <= age_cutoff;
    continue when not past_max_age and ord.created_at >= cutoff;
    continue when not past_max_age and exists (
      select from core.payments as p
      where
        p.order_id = ord.id
        and (
          p.status = 'succeeded'
          or (p.status in ('created', 'open') and (p.created_at >= cutoff or p.expires_at > pg_catalog.now()))
        )
    );

    -- restock what the order still holds according to the ledger, products locked in id order
    perform from core.products as pr
    where pr.id in (select m.product_id from core.inventory_movements as m where m.order_id = ord.id)
    order by pr.id
    for no key update;
    insert into core.inventory_movements (product_id, delta, reason, order_id, note)
    select
      m.product_id,
      -sum(m.delta)::integer,
      'order_expired',
      ord.id,
      case when past_max_age then 'unpaid order reached its maximum age' else 'unpaid order expired' end
    from core.inventory_movements as m
    where m.order_id = ord.id
    group by m.product_id
    having sum(m.delta) < 0
    order by m.product_id;

    -- the attempts that were never paid close with the order; a success arriving later is refunded
    update core.payments as p
    set
      status = case when p.status = 'open' and p.expires_at <= pg_catalog.now() then 'expired' else 'canceled' end,
      failure_reason = 'order_expired'
    where p.order_id = ord.id and p.status in ('created', 'open');

    update core.orders as o
    set status = 'cancelled', cancelled_at = pg_catalog.now(), cancel_reason = 'expired'
    where o.id = ord.id;
    expired := expired + 1;
  end loop;
  return expired;
end;
$$;

comment on function ops.expire_unpaid_orders(interval, interval) is
'Cancels unpaid (pending) orders (cancel_reason expired) and puts their stock back (ledger reason
order_expired, the quantities the ledger still holds for the order). An order ends at max_age after its
creation (null: core.order_max_unpaid_age(), the setting commercecore.order_max_unpaid_age, else 60
minutes) whatever its checkout attempts, so that new attempts cannot keep stock unpaid. Before that it ends
once created more than ttl ago, unless its customer has paid or may be paying: any succeeded payment (it
waits for staff), any created/open attempt started within the ttl, or an open checkout session whose
expires_at is still ahead. The order''s remaining created/open attempts close with it: expired when their
session has expired, else canceled (failure_reason order_expired); a success that arrives later is recorded
and refunded. Rows busy in another transaction are skipped (lock order: payments, then the order, for
update skip locked) and retried by the next run. Returns the number of orders expired. Run by
`commercecore jobs run` (ttl: --ttl or ORDER_PAYMENT_TTL; max_age: --max-age or ORDER_MAX_UNPAID_AGE).';

grant execute on function ops.expire_unpaid_orders(interval, interval) to app_dba;

-- the daily sales report ------------------------------------------------------------------------------------

create materialized view ops.sales_daily as
select
  (o.paid_at at time zone 'UTC')::date as day,
  o.currency,
  count(*)::bigint as orders_paid,
  sum(o.total_minor)::bigint as revenue_minor,
  sum(o.refunded_minor)::bigint as refunded_minor,
  coalesce(sum(i.units), 0)::bigint as units
from core.orders as o
left join lateral (
  select sum(oi.quantity) as units from core.order_items as oi where oi.order_id = o.id
) as i on true
where o.status in ('paid', 'refunded')
group by (o.paid_at at time zone 'UTC')::date, o.currency
with data;

comment on materialized view ops.sales_daily is
'Paid orders per UTC day of payment and currency: orders_paid, revenue_minor (their totals), refunded_minor
(refunded on them so far), units (items sold). Refreshed by ops.refresh_sales_daily().';

create unique index sales_daily_day_currency_key on ops.sales_daily (day, currency);
comment on index ops.sales_daily_day_currency_key is 'One row per day and currency; lets the report refresh concurrently.';

grant select on ops.sales_daily to app_dba, app_admin;

create function ops.refresh_sales_daily() returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- concurrently: readers of the report are never blocked by a refresh
  refresh materialized view concurrently ops.sales_daily;
end;
$$;

comment on function ops.refresh_sales_daily() is
'Refreshes ops.sales_daily concurrently (readers keep reading the previous contents meanwhile).';

grant execute on function ops.refresh_sales_daily() to app_dba;

-- monitoring ------------------------------------------------------------------------------------------------

create view ops.top_queries with (security_barrier) as
select
  s.queryid,
  s.query,
  s.calls,
  s.rows,
  pg_catalog.pg_get_userbyid(s.userid) as role_name,
  round(s.total_exec_time::numeric, 3) as total_exec_ms,
  round(s.mean_exec_time::numeric, 3) as mean_exec_ms,
  round(s.shared_blks_hit::numeric / nullif(s.shared_blks_hit + s.shared_blks_read, 0), 4) as shared_blks_hit_ratio
from ops.pg_stat_statements(true) as s
where s.dbid = (select d.oid from pg_catalog.pg_database as d where d.datname = current_database())
order by s.total_exec_time desc;

comment on view ops.top_queries is
'The statements of this database by total execution time (pg_stat_statements): calls, rows, total and mean
milliseconds, and the share of shared blocks found in the buffer cache.';

grant select on ops.top_queries to app_dba;

create view ops.index_usage with (security_barrier) as
select
  s.schemaname as schema_name,
  s.relname as table_name,
  s.indexrelname as index_name,
  s.idx_scan,
  s.idx_tup_read,
  s.idx_tup_fetch,
  s.last_idx_scan,
  i.indisunique as is_unique,
  i.indisprimary as is_primary,
  pg_catalog.pg_relation_size(s.indexrelid) as index_size_bytes,
  pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.indexrelid)) as index_size,
  s.idx_scan = 0 and not i.indisunique and not i.indisprimary as unused
from pg_catalog.pg_stat_user_indexes as s
inner join pg_catalog.pg_index as i on s.indexrelid = i.indexrelid
order by pg_catalog.pg_relation_size(s.indexrelid) desc, s.schemaname asc, s.indexrelname asc;

comment on view ops.index_usage is
'Every user index with its scans (pg_stat_user_indexes) and size; unused: never scanned since the statistics
were reset and not enforcing uniqueness, a candidate to drop (check the replicas first).';

grant select on ops.index_usage to app_dba;

create view ops.cache_hit_ratio with (security_barrier) as
select
  d.datname as database_name,
  d.blks_hit,
  d.blks_read,
  round(d.blks_hit::numeric / nullif(d.blks_hit + d.blks_read, 0), 4) as database_hit_ratio,
  (
    select round(sum(t.heap_blks_hit)::numeric / nullif(sum(t.heap_blks_hit + t.heap_blks_read), 0), 4)
    from pg_catalog.pg_statio_user_tables as t
  ) as table_hit_ratio,
  (
    select round(sum(x.idx_blks_hit)::numeric / nullif(sum(x.idx_blks_hit + x.idx_blks_read), 0), 4)
    from pg_catalog.pg_statio_user_indexes as x
  ) as index_hit_ratio
from pg_catalog.pg_stat_database as d
where d.datname = current_database();

comment on view ops.cache_hit_ratio is
'The share of block reads served from shared buffers: for the whole database, its tables and its indexes
(below about 0.99 on a warmed-up OLTP database, shared_buffers is worth a look).';

grant select on ops.cache_hit_ratio to app_dba;

-- security invoker: pgstattuple_approx is granted to pg_stat_scan_tables (which app_dba holds through
-- pg_monitor), not to the owner, so the function runs with its caller's rights
create function ops.table_bloat("table" regclass) returns table (
  table_name text,
  table_len bigint,
  scanned_percent double precision,
  approx_tuple_count bigint,
  approx_tuple_percent double precision,
  dead_tuple_count bigint,
  dead_tuple_len bigint,
  dead_tuple_percent double precision,
  approx_free_space bigint,
  approx_free_percent double precision
)
language sql
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select
    table_bloat."table"::text, s.table_len, s.scanned_percent, s.approx_tuple_count, s.approx_tuple_percent,
    s.dead_tuple_count, s.dead_tuple_len, s.dead_tuple_percent, s.approx_free_space, s.approx_free_percent
  from ops.pgstattuple_approx(table_bloat."table") as s
$$;

comment on function ops.table_bloat(regclass) is
'Approximate bloat of one table (pgstattuple_approx, reading only pages the visibility map does not vouch
for): dead tuples and free space, in bytes and percent. Needs pg_stat_scan_tables (app_dba has it through
pg_monitor); it runs with the caller''s rights.';

grant execute on function ops.table_bloat(regclass) to app_dba;

-- app_dba has no usage on core (docs/architecture.md, "Schemas"), so it cannot cast 'core.orders' to
-- regclass itself: this overload finds the table in the catalog by its (schema-qualified) name
create function ops.table_bloat("table" text) returns table (
  table_name text,
  table_len bigint,
  scanned_percent double precision,
  approx_tuple_count bigint,
  approx_tuple_percent double precision,
  dead_tuple_count bigint,
  dead_tuple_len bigint,
  dead_tuple_percent double precision,
  approx_free_space bigint,
  approx_free_percent double precision
)
language plpgsql
security invoker
set search_path = pg_catalog, pg_temp
as $$
declare
  parts text[] := pg_catalog.parse_ident(table_bloat."table");
  matches oid[];
begin
  select pg_catalog.array_agg(c.oid) into matches
  from pg_catalog.pg_class as c
  join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
  where
    c.relkind in ('r', 'm', 't')
    and c.relname = parts[pg_catalog.array_length(parts, 1)]
    and case
      when pg_catalog.array_length(parts, 1) = 2 then n.nspname = parts[1]
      else n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
    end;
  if coalesce(pg_catalog.cardinality(matches), 0) <> 1 then
    raise exception using
      errcode = '42P01',
      message = pg_catalog.format('No single table is named %s.', table_bloat."table"),
      hint = 'Name the table with its schema, e.g. core.orders.';
  end if;
  return query select b.* from ops.table_bloat(matches[1]::regclass) as b;
end;
$$;

comment on function ops.table_bloat(text) is
'ops.table_bloat by name (core.orders), for DBAs who may not resolve names in core themselves.';

grant execute on function ops.table_bloat(text) to app_dba;

commit;
