-- Verify commercecore:procedures/addresses/fields on pg
begin;

select 1 / (core.address_country(' de ') = 'DE')::int;
select 1 / (not core.is_country_code('XX'))::int;
select 1 / (core.address_kind(' Shipping ') = 'shipping')::int;
select 1 / (core.address_field('city', '  Town ', true, 100) = 'Town')::int;

-- a field that is too long is refused with its name
do $$
declare
  got_detail text;
begin
  perform core.address_field('city', repeat('x', 101), true, 100);
  raise exception 'a city of 101 characters was accepted';
exception when sqlstate 'PT422' then
  get stacked diagnostics got_detail = pg_exception_detail;
  if got_detail::jsonb ->> 'field' is distinct from 'city' then
    raise exception 'the error named %', got_detail;
  end if;
end;
$$;

select 1 / (not has_function_privilege('app_readwrite', 'core.address_json(core.addresses)', 'execute'))::int;

rollback;
