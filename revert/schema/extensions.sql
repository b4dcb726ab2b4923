-- Revert commercecore:schema/extensions from pg
begin;

drop extension if exists pgstattuple;
drop extension if exists pg_stat_statements;

commit;
