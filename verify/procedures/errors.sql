-- Verify commercecore:procedures/errors on pg
begin;

-- each helper raises exactly the error it documents: SQLSTATE, message, detail (JSON as text) and hint
do $$
declare
  expected record;
  got text[];
  got_state text;
  got_message text;
  got_detail text;
  got_hint text;
begin
  for expected in
    select * from (
      values
      (
        $q$select core.raise_error('409', 'order_not_editable', 'Paid.', '{"order_id": 7, "status": "paid"}', 'H.')$q$,
        'PT409', 'Paid.', '{"code": "order_not_editable", "status": "paid", "order_id": 7}', 'H.'
      ),
      (
        $q$select core.raise_not_found('order', 42::bigint)$q$,
        'PT404', 'There is no order with this id.', '{"id": 42, "code": "not_found", "resource": "order"}', ''
      ),
      (
        $q$select core.raise_invalid('q', 'q is too long.', '{"max_length": 256}', 'H.')$q$,
        'PT422', 'q is too long.', '{"code": "invalid_input", "field": "q", "max_length": 256}', 'H.'
      )
    ) as c (statement, state, message, detail, hint)
  loop
    got_state := null;
    begin
      execute expected.statement;
    exception when others then
      get stacked diagnostics
        got_state = returned_sqlstate, got_message = message_text, got_detail = pg_exception_detail,
        got_hint = pg_exception_hint;
    end;
    got := array[got_state, got_message, got_detail, got_hint];
    if got is distinct from array[expected.state, expected.message, expected.detail, expected.hint] then
      raise exception '% raised %', expected.statement, got;
    end if;
  end loop;
end;
$$;

-- internal: neither PUBLIC nor a request role may call them (the api functions do, as their owner)
select 1 / (not has_function_privilege('public', 'core.raise_error(text, text, text, jsonb, text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_readwrite', 'core.raise_error(text, text, text, jsonb, text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_readwrite', 'core.raise_not_found(text, anyelement, text, text)', 'execute'))::int;
select 1 / (not has_function_privilege('app_readwrite', 'core.raise_invalid(text, text, jsonb, text)', 'execute'))::int;
select 1 / has_function_privilege('app_owner', 'core.raise_error(text, text, text, jsonb, text)', 'execute')::int;

rollback;
