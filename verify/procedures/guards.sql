-- Verify commercecore:procedures/guards on pg
begin;

-- without a user, each guard raises its own error
do $$
declare
  expected record;
  got text[];
  got_state text;
  got_detail text;
begin
  perform pg_catalog.set_config('request.jwt.claims', '', true);
  for expected in
    select * from (
      values
      ('select core.require_customer()', 'PT401', '{"code": "unauthenticated"}'),
      ('select core.require_signed_in()', 'PT401', '{"code": "not_authenticated"}'),
      ('select core.signed_in_user()', 'PT401', '{"code": "not_authenticated"}'),
      ('select core.signed_in_user(lock_row => true)', 'PT401', '{"code": "not_authenticated"}'),
      ('select core.require_staff()', 'PT403', '{"code": "forbidden"}')
    ) as c (statement, state, detail)
  loop
    got_state := null;
    begin
      execute expected.statement;
    exception when others then
      get stacked diagnostics got_state = returned_sqlstate, got_detail = pg_exception_detail;
    end;
    got := array[got_state, got_detail];
    if got is distinct from array[expected.state, expected.detail] then
      raise exception '% raised %', expected.statement, got;
    end if;
  end loop;
end;
$$;

-- a signed-in user passes (staff pass the staff guard in verify/procedures/catalog/products)
insert into core.users (email) values ('verify-guards@example.com');
select set_config('request.jwt.claims', jsonb_build_object('sub', id::text)::text, true)
from core.users where email = 'verify-guards@example.com';
select 1 / (core.require_customer() = core.current_user_id())::int;
select 1 / (core.require_signed_in() = core.current_user_id())::int;
select 1 / ((core.signed_in_user(lock_row => true)).email = 'verify-guards@example.com')::int;

select 1 / (not has_function_privilege('app_readwrite', 'core.require_customer()', 'execute'))::int;
select 1 / (not has_function_privilege('app_admin', 'core.require_staff(text, text)', 'execute'))::int;

rollback;
