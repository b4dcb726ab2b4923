-- Revert commercecore:schema/notify from pg
begin;

do $$
begin
  drop event trigger commercecore_schema_changed;
end;
$$;
drop function ops.notify_schema_change();

commit;
