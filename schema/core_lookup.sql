-- Deploy commercecore:schema/core_lookup to pg
-- requires: schema/namespaces
-- A DBA's monitoring SQL names tables as typed (`select * from pgstattuple('orders')`): app_dba may look
-- names up in core. USAGE on a schema grants no privilege on what is in it: app_dba still reads no table
-- of core and calls no function of it beyond the request context it already had; pgstattuple itself comes
-- from pg_stat_scan_tables (through pg_monitor), which reaches any table by oid already.
begin;

grant usage on schema core to app_dba;

comment on schema core is
'Tables, types and triggers of the product. Nobody but the owner; all access goes through api. '
'app_dba may look names up here (usage only, for the monitoring functions that take a table name).';

commit;
