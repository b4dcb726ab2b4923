-- Revert commercecore:roles/base from pg
-- Gives this database back to PUBLIC and drops the roles, except a role that other databases of the
-- cluster still use (a test template, a restored copy): dropping it would fail or break them.
begin;

do $$
declare
  role_name text;
begin
  execute format('revoke connect on database %I from authenticator, app_owner, app_dba', current_database());
  execute format('grant connect, temporary on database %I to public', current_database());

  foreach role_name in array array[
    'authenticator', 'app_dba', 'app_payments', 'app_admin', 'app_readwrite', 'app_readonly', 'app_owner'
  ]
  loop
    continue when not exists (select from pg_catalog.pg_roles where rolname = role_name);
    if exists (
      select
      from pg_catalog.pg_shdepend as d
      where
        d.refclassid = 'pg_catalog.pg_authid'::regclass
        and d.refobjid = (select oid from pg_catalog.pg_roles where rolname = role_name)
    ) then
      raise notice 'role % is still used by another database of this cluster; kept', role_name;
    else
      execute format('drop role %I', role_name);
    end if;
  end loop;
end;
$$;

commit;
