-- Revert commercecore:schema/order_totals from pg
begin;

set local role app_owner;

drop trigger orders_release_units on core.orders;
drop trigger orders_hold_units on core.orders;
drop function core.hold_order_units();
drop table core.held_units;

create or replace function core.maintain_order_total() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- statement level with transition tables: one update per order per statement, however many lines
  if tg_op = 'INSERT' then
    update core.orders as o set total_minor = o.total_minor + d.delta
    from (
      select order_id, sum(quantity::bigint * unit_price_minor) as delta from new_items group by order_id
    ) as d
    where o.id = d.order_id and d.delta <> 0;
  elsif tg_op = 'DELETE' then
    update core.orders as o set total_minor = o.total_minor - d.delta
    from (
      select order_id, sum(quantity::bigint * unit_price_minor) as delta from old_items group by order_id
    ) as d
    where o.id = d.order_id and d.delta <> 0;
  else
    if exists (select from new_items as n join old_items as o using (product_id) where n.order_id <> o.order_id) then
      raise exception 'an order item cannot move to another order' using errcode = '23514';
    end if;
    update core.orders as o set total_minor = o.total_minor + d.delta
    from (
      select order_id, sum(amount) as delta
      from (
        select order_id, quantity::bigint * unit_price_minor as amount from new_items
        union all
        select order_id, -(quantity::bigint * unit_price_minor) from old_items
      ) as changes
      group by order_id
    ) as d
    where o.id = d.order_id and d.delta <> 0;
  end if;
  return null;
end;
$$;

comment on function core.maintain_order_total() is 'Trigger: keeps orders.total_minor equal to the sum of its items.';

commit;
