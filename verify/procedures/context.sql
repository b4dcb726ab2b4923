-- Verify commercecore:procedures/context on pg
begin;

select set_config('request.jwt.claims', '{"sub": "42", "role": "app_readwrite"}', true);
select 1 / (core.current_user_id() = 42)::int;
select set_config('request.jwt.claims', '', true);
select 1 / (core.current_user_id() is null)::int;

rollback;
