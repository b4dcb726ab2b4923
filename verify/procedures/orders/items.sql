-- Verify commercecore:procedures/orders/items on pg
begin;

-- lines of one product are merged, products come in id order
select
  1 / (product_ids = '{3,5}' and quantities = '{2,4}')::int
from core.parse_order_items('[{"product_id": 5, "quantity": 1}, {"product_id": 3, "quantity": 2},
  {"product_id": 5, "quantity": 3.0}]');

-- a price in an item is refused, naming the field
do $$
declare
  got text;
begin
  perform core.parse_order_items('[{"product_id": 1, "quantity": 1, "price_minor": 1}]');
  raise exception 'an item with a price was accepted';
exception when sqlstate 'PT422' then
  get stacked diagnostics got = pg_exception_detail;
  if got::jsonb ->> 'field' <> 'items[0].price_minor' then
    raise exception 'the error named %', got;
  end if;
end;
$$;

select 1 / core.is_whole_number('1e2', 1, 100)::int;
select 1 / (not core.is_whole_number('"1"', 1, 100))::int;

rollback;
