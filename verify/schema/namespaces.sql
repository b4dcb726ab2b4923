-- Verify commercecore:schema/namespaces on pg
begin;

select 1 / (count(*) = 6)::int
from pg_catalog.pg_namespace
where
  nspname in ('core', 'api', 'auth', 'billing', 'ops', 'audit')
  and nspowner = 'app_owner'::regrole;

-- PUBLIC reaches none of them; only api is open to the request roles
select 1 / (
  not has_schema_privilege('public', 'core', 'usage')
  and not has_schema_privilege('public', 'api', 'usage')
  and not has_schema_privilege('app_readwrite', 'core', 'usage')
  and has_schema_privilege('app_readwrite', 'api', 'usage')
  and not has_schema_privilege('app_readwrite', 'billing', 'usage')
  and has_schema_privilege('app_payments', 'billing', 'usage')
)::int;

rollback;
