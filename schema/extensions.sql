-- Deploy commercecore:schema/extensions to pg
-- requires: schema/namespaces
-- The monitoring extensions, installed in ops so that they sit with the views that read them.
-- pg_stat_statements also needs shared_preload_libraries (set for the embedded cluster and in Compose).
begin;

create extension if not exists pg_stat_statements with schema ops;
create extension if not exists pgstattuple with schema ops;

-- the extensions grant their views and functions to PUBLIC; here only the DBA role reads them
revoke all on ops.pg_stat_statements, ops.pg_stat_statements_info from public;
revoke all on function ops.pg_stat_statements(boolean), ops.pg_stat_statements_info() from public;
-- ops.top_queries calls pg_stat_statements() as its caller, so app_dba needs the function as well as the views
grant select on ops.pg_stat_statements, ops.pg_stat_statements_info to app_dba;
grant execute on function ops.pg_stat_statements(boolean), ops.pg_stat_statements_info() to app_dba;

commit;
