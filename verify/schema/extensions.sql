-- Verify commercecore:schema/extensions on pg
begin;

select 1 / (count(*) = 2)::int
from pg_catalog.pg_extension
where extname in ('pg_stat_statements', 'pgstattuple');

rollback;
