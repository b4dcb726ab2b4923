-- Deploy commercecore:schema/updated_at to pg
-- requires: schema/namespaces
-- The trigger function that stamps updated_at, shared by every table that has the column: each table's
-- change creates its own `<table>_set_updated_at` trigger on it.
begin;

set local role app_owner;

create function core.set_updated_at() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end;
$$;

comment on function core.set_updated_at() is 'Trigger: stamps updated_at on every update.';

commit;
