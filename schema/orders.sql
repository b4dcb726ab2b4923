-- Deploy commercecore:schema/orders to pg
-- requires: schema/users
-- requires: schema/catalog
-- requires: procedures/context
-- requires: schema/updated_at
-- Orders and their items. Items carry the price at the time of ordering; the order total is kept equal to
-- the sum of its items by a trigger, so it holds whoever writes the items. The limits on a customer's
-- unpaid orders are functions (procedures/orders/limits).
begin;

set local role app_owner;

create table core.orders (
  id bigint generated always as identity,
  user_id bigint not null,
  status text not null default 'pending',
  currency text not null,
  total_minor bigint not null default 0,
  refunded_minor bigint not null default 0,
  shipping_address_id bigint,
  shipping_address jsonb,
  cancel_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  paid_at timestamptz,
  cancelled_at timestamptz,
  constraint orders_pkey primary key (id),
  constraint orders_id_user_id_key unique (id, user_id),
  constraint orders_user_id_fkey foreign key (user_id) references core.users (id) on delete restrict,
  constraint orders_shipping_address_id_fkey foreign key (shipping_address_id)
  references core.addresses (id) on delete set null,
  constraint orders_status_check check (status in ('pending', 'paid', 'cancelled', 'refunded')),
  constraint orders_currency_check check (currency ~ '^[A-Z]{3}$'),
  constraint orders_total_minor_check check (total_minor >= 0),
  constraint orders_refunded_minor_check check (refunded_minor >= 0 and refunded_minor <= total_minor),
  constraint orders_paid_at_check check ((status in ('paid', 'refunded')) = (paid_at is not null)),
  constraint orders_cancelled_at_check check ((status = 'cancelled') = (cancelled_at is not null)),
  constraint orders_cancel_reason_check check (cancel_reason in ('customer', 'staff', 'expired'))
);

comment on table core.orders is
'Orders: pending -> paid | cancelled; paid -> refunded once fully refunded (partial refunds in refunded_minor).';
comment on column core.orders.total_minor is 'Sum of the items'' unit_price_minor x quantity, kept by a trigger.';
comment on column core.orders.refunded_minor is 'Amount refunded so far; the order is refunded when it reaches the total.';
comment on column core.orders.shipping_address is 'Snapshot of the shipping address when the order was placed.';

create index orders_user_id_created_at_idx on core.orders (user_id, created_at desc, id desc);
create index orders_pending_created_at_idx on core.orders (created_at) where status = 'pending';
create index orders_status_created_at_idx on core.orders (status, created_at desc);
-- the limits on a customer's unpaid orders count them at every order: a few rows, whatever the history
create index orders_user_id_pending_idx on core.orders (user_id) where status = 'pending';
comment on index core.orders_user_id_pending_idx is 'A customer''s unpaid orders, counted against their limits.';
create index orders_shipping_address_id_idx on core.orders (shipping_address_id) where shipping_address_id is not null;

create trigger orders_set_updated_at before update on core.orders
for each row execute function core.set_updated_at();

alter table core.orders enable row level security;
alter table core.orders force row level security;

create policy orders_owner on core.orders
using (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()))
with check (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()));

comment on policy orders_owner on core.orders is 'A customer sees and changes only their own orders.';

create table core.order_items (
  order_id bigint not null,
  product_id bigint not null,
  user_id bigint not null,
  quantity integer not null,
  unit_price_minor bigint not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint order_items_pkey primary key (order_id, product_id),
  constraint order_items_order_id_fkey foreign key (order_id, user_id)
  references core.orders (id, user_id) on delete cascade,
  constraint order_items_product_id_fkey foreign key (product_id) references core.products (id) on delete restrict,
  constraint order_items_quantity_check check (quantity > 0 and quantity <= 10000),
  constraint order_items_unit_price_minor_check check (unit_price_minor >= 0)
);

comment on table core.order_items is 'The lines of an order, with the unit price snapshot taken when the line was added.';
comment on column core.order_items.user_id is 'The order''s owner, repeated so that row-level security needs no join.';
comment on column core.order_items.unit_price_minor is 'The product''s price when the line was added.';

create index order_items_product_id_idx on core.order_items (product_id);

create trigger order_items_set_updated_at before update on core.order_items
for each row execute function core.set_updated_at();

alter table core.order_items enable row level security;
alter table core.order_items force row level security;

create policy order_items_owner on core.order_items
using (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()))
with check (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()));

comment on policy order_items_owner on core.order_items is 'A customer sees and changes only the items of their own orders.';

create function core.maintain_order_total() returns trigger
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

create trigger order_items_total_after_insert after insert on core.order_items
referencing new table as new_items
for each statement execute function core.maintain_order_total();
create trigger order_items_total_after_update after update on core.order_items
referencing old table as old_items new table as new_items
for each statement execute function core.maintain_order_total();
create trigger order_items_total_after_delete after delete on core.order_items
referencing old table as old_items
for each statement execute function core.maintain_order_total();

alter table core.inventory_movements
add constraint inventory_movements_order_id_fkey foreign key (order_id) references core.orders (id) on delete restrict;

commit;
