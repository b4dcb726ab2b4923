-- Deploy commercecore:procedures/orders/items to pg
-- requires: procedures/errors
-- The items of a new order as the request sends them, checked before anything is looked up or locked: an
-- array of 1..100 {product_id, quantity}; no other key is accepted (prices come from the catalog, never
-- from the request); lines of the same product are merged.
begin;

set local role app_owner;

create or replace function core.is_whole_number(candidate jsonb, low numeric, high numeric)
returns boolean
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  amount numeric;
begin
  if jsonb_typeof(is_whole_number.candidate) is distinct from 'number' then
    return false;
  end if;
  amount := is_whole_number.candidate::numeric;
  return amount = trunc(amount) and amount between is_whole_number.low and is_whole_number.high;
end;
$$;

comment on function core.is_whole_number(jsonb, numeric, numeric) is
'True when a JSON value is a number without fraction within [low, high] (1, 2.0 and 1e2 are whole; "1" is not).';

-- volatile, as the functions of procedures/errors: it raises, and must not be evaluated ahead of its statement
create or replace function core.parse_order_items(items jsonb, out product_ids bigint[], out quantities integer[])
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  line record;
  bad_field text;
  bad_reason text;
begin
  if jsonb_typeof(parse_order_items.items) is distinct from 'array' then
    perform core.raise_invalid(
      'items', 'items must be an array of {product_id, quantity}.',
      hint => 'Send for example {"items": [{"product_id": 1, "quantity": 2}]}.'
    );
  end if;
  if jsonb_array_length(parse_order_items.items) not between 1 and 100 then
    perform core.raise_invalid(
      'items', 'An order has 1 to 100 lines.',
      jsonb_build_object('min', 1, 'max', 100, 'count', jsonb_array_length(parse_order_items.items)),
      'Split a larger order in several.'
    );
  end if;
  for line in
    select e.value, e.ordinality - 1 as position
    from jsonb_array_elements(parse_order_items.items) with ordinality as e
  loop
    bad_field := null;
    if jsonb_typeof(line.value) <> 'object' then
      bad_field := format('items[%s]', line.position);
      bad_reason := 'must be an object {product_id, quantity}';
    else
      select format('items[%s].%s', line.position, k.name) into bad_field
      from jsonb_object_keys(line.value) as k (name)
      where k.name not in ('product_id', 'quantity')
      order by k.name
      limit 1;
      bad_reason := 'is not accepted: an item has only product_id and quantity, prices come from the catalog';
      if bad_field is null and not core.is_whole_number(line.value -> 'product_id', 1, 9223372036854775807) then
        bad_field := format('items[%s].product_id', line.position);
        bad_reason := 'must be a product id';
      elsif bad_field is null and not core.is_whole_number(line.value -> 'quantity', 1, 10000) then
        bad_field := format('items[%s].quantity', line.position);
        bad_reason := 'must be a whole number from 1 to 10000';
      end if;
    end if;
    if bad_field is not null then
      perform core.raise_invalid(
        bad_field, format('%s %s.', bad_field, bad_reason),
        hint => 'Each item is {"product_id": <id>, "quantity": <1..10000>}.'
      );
    end if;
  end loop;

  select array_agg(m.product_id order by m.product_id), array_agg(m.quantity order by m.product_id)
  into parse_order_items.product_ids, parse_order_items.quantities
  from (
    select
      (e.value ->> 'product_id')::numeric::bigint as product_id,
      sum((e.value ->> 'quantity')::numeric::integer) as quantity
    from jsonb_array_elements(parse_order_items.items) as e
    group by 1
  ) as m;
  select u.product_id into line
  from unnest(parse_order_items.product_ids, parse_order_items.quantities) as u (product_id, quantity)
  where u.quantity > 10000
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_invalid(
      'items', 'The lines of one product add up to more than 10000 units.',
      jsonb_build_object('product_id', line.product_id), 'Order at most 10000 units of a product.'
    );
  end if;
end;
$$;

comment on function core.parse_order_items(jsonb) is
'The items of a new order, checked and merged: product_ids in ascending order and the quantity of each
(the lines of one product added up). PT422 invalid_input naming the field: items (not an array, not 1..100
lines, more than 10000 units of one product), items[i] (not an object), items[i].<key> (any key but
product_id and quantity), items[i].product_id, items[i].quantity (not a whole number from 1 to 10000).';

commit;
