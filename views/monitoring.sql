-- Deploy commercecore:views/monitoring to pg
-- requires: schema/extensions
-- The monitoring views a DBA reads (app_dba, member of pg_monitor): the costliest statements, the use and
-- size of every index, and the share of reads served from shared buffers.
begin;

set local role app_owner;

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

commit;
