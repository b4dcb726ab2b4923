-- Deploy commercecore:schema/order_totals to pg
-- requires: schema/orders
-- What the lines of orders add up to, kept by the statement-level triggers of core.order_items (schema/orders)
-- for every writer, psql included. An order's total, now by comparison instead of by increment: after each
-- statement on the lines, the orders it touched are locked and their totals set to the sum of their lines
-- where they differ, so a function that writes an order and its lines in one statement (core.place_order)
-- gives the order the total it knows and the trigger writes nothing. And the units each customer holds of
-- each product in unpaid (pending) orders (core.held_units), which the limits on unpaid orders read in one
-- look however many orders the customer has (procedures/orders/limits).
begin;

set local role app_owner;

create table core.held_units (
  user_id bigint not null,
  product_id bigint not null,
  -- no check of units >= 0: INSERT ... ON CONFLICT checks the row it proposes (a negative move) before it
  -- finds the row it then updates
  units bigint not null,
  constraint held_units_pkey primary key (user_id, product_id)
);

comment on table core.held_units is
'The units of each product in each customer''s pending orders (the sum of those orders'' lines), kept by
the triggers of core.order_items and core.orders; read by core.check_order_limits.';

insert into core.held_units (user_id, product_id, units)
select o.user_id, i.product_id, sum(i.quantity) as units
from core.orders as o
inner join core.order_items as i on o.id = i.order_id
where o.status = 'pending'
group by o.user_id, i.product_id;

create or replace function core.maintain_order_total() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  -- the lines the statement changed: order, product and units (negative for units gone)
  orders bigint[];
  products bigint[];
  units bigint[];
begin
  if tg_op = 'INSERT' then
    select array_agg(n.order_id), array_agg(n.product_id), array_agg(n.quantity::bigint) into orders, products, units
    from new_items as n;
  elsif tg_op = 'DELETE' then
    select array_agg(d.order_id), array_agg(d.product_id), array_agg(-d.quantity::bigint) into orders, products, units
    from old_items as d;
  else
    if exists (select from new_items as n join old_items as o using (product_id) where n.order_id <> o.order_id) then
      raise exception 'an order item cannot move to another order' using errcode = '23514';
    end if;
    select array_agg(c.order_id), array_agg(c.product_id), array_agg(c.units) into orders, products, units
    from (
      select n.order_id, n.product_id, n.quantity::bigint as units from new_items as n
      union all
      select d.order_id, d.product_id, -d.quantity::bigint from old_items as d
    ) as c;
  end if;
  -- the orders first, in id order: a concurrent writer of the same orders' lines commits before the sums
  -- below are read (each statement here sees what committed before it)
  perform from core.orders as o where o.id = any(orders) order by o.id for no key update;
  update core.orders as o set total_minor = s.total
  from (
    select
      t.order_id,
      coalesce(
        (select sum(i.quantity::bigint * i.unit_price_minor) from core.order_items as i where i.order_id = t.order_id), 0
      ) as total
    from (select distinct x.order_id from unnest(orders) as x (order_id)) as t
  ) as s
  where o.id = s.order_id and o.total_minor <> s.total;
  -- the units the lines of pending orders hold, by customer and product
  insert into core.held_units as h (user_id, product_id, units)
  select o.user_id, c.product_id, sum(c.units)
  from unnest(orders, products, units) as c (order_id, product_id, units)
  join core.orders as o on c.order_id = o.id
  where o.status = 'pending'
  group by o.user_id, c.product_id
  having sum(c.units) <> 0
  order by o.user_id, c.product_id
  on conflict (user_id, product_id) do update set units = h.units + excluded.units;
  return null;
end;
$$;

comment on function core.maintain_order_total() is
'Trigger (statement level): sets orders.total_minor to the sum of the items of every order the statement
touched, where it differs (the orders locked first, in id order), and moves core.held_units by the lines of
pending orders it changed.';

create function core.hold_order_units() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  sign integer := case when tg_op = 'DELETE' then -1 when new.status = 'pending' then 1 else -1 end;
begin
  -- an order entering or leaving pending (paid, cancelled, expired, deleted) adds or takes away its lines
  insert into core.held_units as h (user_id, product_id, units)
  select old.user_id, i.product_id, sign * i.quantity::bigint
  from core.order_items as i
  where i.order_id = old.id
  order by i.product_id
  on conflict (user_id, product_id) do update set units = h.units + excluded.units;
  -- the delete goes on (a BEFORE trigger); an AFTER trigger's result is not used
  return old;
end;
$$;

comment on function core.hold_order_units() is
'Trigger: moves core.held_units by an order''s lines when the order enters or leaves pending.';

create trigger orders_hold_units after update of status on core.orders
for each row when ((old.status = 'pending') is distinct from (new.status = 'pending'))
execute function core.hold_order_units();
-- before the delete, while the lines (deleted with the order) are still there
create trigger orders_release_units before delete on core.orders
for each row when (old.status = 'pending')
execute function core.hold_order_units();

commit;
