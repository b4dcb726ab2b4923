-- Deploy commercecore:schema/notify to pg
-- requires: schema/namespaces
-- Tells running gateways to reload their schema cache after any DDL, whichever tool ran it (commercecore db,
-- sqitch, psql): an event trigger sends NOTIFY commercecore_schema, delivered when the transaction commits.
begin;

create function ops.notify_schema_change() returns event_trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- identical notifications of one transaction are delivered once, so a deployment reloads once per script
  perform pg_catalog.pg_notify('commercecore_schema', 'reload');
end;
$$;

alter function ops.notify_schema_change() owner to app_owner;
-- made by the deploying superuser, so the owner's default privileges did not apply: nobody calls it directly
revoke all on function ops.notify_schema_change() from public;

comment on function ops.notify_schema_change() is
'Event trigger: NOTIFY commercecore_schema after DDL, so gateways reload their schema cache.';

-- (in a DO block only because the SQL linter does not parse event trigger statements)
do $$
begin
  create event trigger commercecore_schema_changed on ddl_command_end
  execute function ops.notify_schema_change();
  comment on event trigger commercecore_schema_changed is 'Reloads the gateways'' schema cache after any DDL.';
end;
$$;

commit;
