-- Verify commercecore:schema/core_lookup on pg
begin;

-- app_dba looks names up in core; the request roles still do not
select 1 / (
  has_schema_privilege('app_dba', 'core', 'usage')
  and not has_schema_privilege('app_admin', 'core', 'usage')
  and not has_schema_privilege('app_readwrite', 'core', 'usage')
)::int;

rollback;
