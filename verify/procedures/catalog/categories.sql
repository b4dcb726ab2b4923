-- Verify commercecore:procedures/catalog/categories on pg
begin;

select 1 / has_function_privilege('app_admin', 'api.create_category(text, text, text, bigint)', 'execute')::int;
select 1 / (not has_function_privilege('app_readwrite', 'api.create_category(text, text, text, bigint)', 'execute'))::int;
select 1 / has_function_privilege(
  'app_admin', 'api.update_category(bigint, text, text, text, bigint, text[])', 'execute'
)::int;
select 1 / (not has_function_privilege(
  'app_readonly', 'api.update_category(bigint, text, text, text, bigint, text[])', 'execute'
))::int;

-- staff create a category, nest a second under it, and may not nest the first under the second
select set_config('role', 'app_admin', true);
select set_config('request.jwt.claims', '{"role": "app_admin"}', true);
select set_config('verify.parent', api.create_category('verify-parent', 'Verify parent') ->> 'id', true);
select set_config(
  'verify.child',
  api.create_category('verify-child', 'Verify child', parent_id => current_setting('verify.parent')::bigint) ->> 'id',
  true
);
select 1 / ((api.update_category(current_setting('verify.child')::bigint, name => 'Renamed') ->> 'name') = 'Renamed')::int;
do $$
begin
  perform api.update_category(
    current_setting('verify.parent')::bigint, parent_id => current_setting('verify.child')::bigint
  );
  raise exception 'a category was nested under its own subcategory';
exception when sqlstate 'PT422' then
  null;
end;
$$;

rollback;
