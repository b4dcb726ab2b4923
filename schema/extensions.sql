-- Deploy commercecore:schema/extensions to pg
-- requires: schema/namespaces
-- The monitoring extensions, installed in ops so that they sit with the views that read them.
-- pg_stat_statements also needs shared_preload_libraries (set for the embedded cluster and in Compose).
begin;

create extension if not exists pg_stat_statements with schema ops;
create extension if not exists pgstattuple with schema ops;

commit;
