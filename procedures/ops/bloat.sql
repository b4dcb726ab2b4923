-- Deploy commercecore:procedures/ops/bloat to pg
-- requires: schema/extensions
-- The bloat of a table (pgstattuple_approx) for DBAs, by regclass or by name.
begin;

set local role app_owner;

-- security invoker: pgstattuple_approx is granted to pg_stat_scan_tables (which app_dba holds through
-- pg_monitor), not to the owner, so the function runs with its caller's rights
create or replace function ops.table_bloat("table" regclass) returns table (
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
create or replace function ops.table_bloat("table" text) returns table (
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
