-- Deploy commercecore:schema/order_totals to pg
-- requires: schema/orders
-- An order's total is the sum of its lines, kept by the statement-level triggers of core.order_items
-- (schema/orders), now by comparison instead of by increment: after each statement on the lines, the
-- orders it touched are locked and their totals set to the sum of their lines where they differ. A
-- function that writes an order and its lines in one statement (core.place_order) gives the order the total
-- it knows, and the trigger then writes nothing; whoever else writes lines, psql included, still gets the
-- total right.
begin;

set local role app_owner;

create or replace function core.maintain_order_total() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  touched bigint[];
begin
  if tg_op = 'INSERT' then
    select array_agg(distinct n.order_id) into touched from new_items as n;
  elsif tg_op = 'DELETE' then
    select array_agg(distinct o.order_id) into touched from old_items as o;
  else
    if exists (select from new_items as n join old_items as o using (product_id) where n.order_id <> o.order_id) then
      raise exception 'an order item cannot move to another order' using errcode = '23514';
    end if;
    select array_agg(distinct n.order_id) into touched from new_items as n;
  end if;
  -- the orders first, in id order: a concurrent writer of the same orders' lines commits before the sums
  -- below are read (each statement here sees what committed before it)
  perform from core.orders as o where o.id = any(touched) order by o.id for no key update;
  update core.orders as o set total_minor = s.total
  from (
    select
      t.order_id,
      coalesce(
        (select sum(i.quantity::bigint * i.unit_price_minor) from core.order_items as i where i.order_id = t.order_id), 0
      ) as total
    from unnest(touched) as t (order_id)
  ) as s
  where o.id = s.order_id and o.total_minor <> s.total;
  return null;
end;
$$;

comment on function core.maintain_order_total() is
'Trigger (statement level): sets orders.total_minor to the sum of the items of every order the statement
touched, where it differs (the orders locked first, in id order).';

commit;
