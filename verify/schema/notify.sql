-- Verify commercecore:schema/notify on pg
begin;

select 1 / count(*)::int
from pg_catalog.pg_event_trigger
where evtname = 'commercecore_schema_changed' and evtenabled <> 'D';

rollback;
