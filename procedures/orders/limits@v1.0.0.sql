-- Deploy commercecore:procedures/orders/limits to pg
-- requires: schema/orders
-- requires: procedures/errors
-- The limits on a customer's unpaid orders, so that no account can take the stock and keep it unpaid: how
-- many of them, how many units of a product across them, how long one may live. The limits are settings
-- (commercecore.*): the gateway sets them per transaction from its environment, and any other session (psql, a
-- script) gets the database's or role's value, else the defaults below. They are counted under the
-- customer's lock (core.lock_customer_orders), the first lock of the functions that add units.
begin;

set local role app_owner;

create or replace function core.order_max_unpaid_age() returns interval
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(current_setting('commercecore.order_max_unpaid_age', true), '')::interval, interval '60 minutes')
$$;

comment on function core.order_max_unpaid_age() is
'How long an unpaid order may live from its creation, whatever its checkout attempts: the setting
commercecore.order_max_unpaid_age (ORDER_MAX_UNPAID_AGE in the gateway), else 60 minutes.';

create or replace function core.max_open_orders() returns integer
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(current_setting('commercecore.max_open_orders', true), '')::integer, 5)
$$;

comment on function core.max_open_orders() is
'How many unpaid (pending) orders one customer may have: the setting commercecore.max_open_orders
(COMMERCECORE_MAX_OPEN_ORDERS in the gateway), else 5.';

create or replace function core.max_units_per_product() returns integer
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(current_setting('commercecore.max_units_per_product', true), '')::integer, 100)
$$;

comment on function core.max_units_per_product() is
'How many units of one product a customer may hold in their unpaid orders together, for products without a
max_per_customer of their own: the setting commercecore.max_units_per_product
(COMMERCECORE_MAX_UNITS_PER_PRODUCT in the gateway), else 100.';

-- volatile, as the functions of procedures/errors: it raises, and must not be evaluated ahead of its statement
create or replace function core.check_unpaid_age(target core.orders)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  max_age interval := core.order_max_unpaid_age();
begin
  if check_unpaid_age.target.status = 'pending' and check_unpaid_age.target.created_at <= now() - max_age then
    perform core.raise_error(
      '409', 'order_expired',
      format(
        'Order %s was not paid within %s minutes of its creation: it has expired.',
        check_unpaid_age.target.id, trim_scale(round(extract(epoch from max_age) / 60, 2))
      ),
      jsonb_build_object(
        'order_id', check_unpaid_age.target.id,
        'created_at', check_unpaid_age.target.created_at,
        'expired_at', check_unpaid_age.target.created_at + max_age,
        'max_age_seconds', extract(epoch from max_age)::bigint
      ),
      'Place a new order: an unpaid order ends at its maximum age, whatever its checkout attempts.'
    );
  end if;
end;
$$;

comment on function core.check_unpaid_age(core.orders) is
'Raises PT409 order_expired {order_id, created_at, expired_at, max_age_seconds} when a pending order is
older than core.order_max_unpaid_age(): it can no longer be paid or grow, only be cancelled (or expire).';

create or replace function core.lock_customer_orders(customer_id bigint)
returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  select pg_advisory_xact_lock(hashtextextended('commercecore.customer_orders|' || lock_customer_orders.customer_id, 0))
$$;

comment on function core.lock_customer_orders(bigint) is
'Takes the transaction lock of one customer''s unpaid orders (an advisory lock): the requests that add units
to a customer''s orders queue on it, so what the customer holds is counted while nothing else adds to it.
The first lock of create_order and modify_order, before any order or product row.';

create or replace function core.check_order_limits(
  customer_id bigint, product_ids bigint[], added integer[], new_order boolean default false
)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  open_limit integer := core.max_open_orders();
  open_count integer;
  over record;
begin
  perform core.lock_customer_orders(check_order_limits.customer_id);
  if check_order_limits.new_order then
    select count(*) into open_count
    from core.orders as o
    where o.user_id = check_order_limits.customer_id and o.status = 'pending';
    if open_count >= open_limit then
      perform core.raise_error(
        '409', 'too_many_open_orders',
        format('There are %s unpaid orders already: a customer may have at most %s.', open_count, open_limit),
        jsonb_build_object('limit', open_limit, 'open_orders', open_count),
        'Pay or cancel an unpaid order first, or add the products to one of them.'
      );
    end if;
  end if;

  -- what the customer's unpaid orders hold of each product, the units asked for now included
  select
    u.product_id,
    u.added,
    coalesce(h.held, 0) as held,
    coalesce(p.max_per_customer, core.max_units_per_product()) as max_units
  into over
  from unnest(check_order_limits.product_ids, check_order_limits.added) as u (product_id, added)
  join core.products as p on u.product_id = p.id
  left join lateral (
    select sum(i.quantity) as held
    from core.orders as o
    join core.order_items as i on o.id = i.order_id
    where o.user_id = check_order_limits.customer_id and o.status = 'pending' and i.product_id = u.product_id
  ) as h on true
  where u.added > 0 and coalesce(h.held, 0) + u.added > coalesce(p.max_per_customer, core.max_units_per_product())
  order by u.product_id
  limit 1;
  if found then
    perform core.raise_error(
      '409', 'per_customer_limit',
      format('A customer may hold at most %s units of this product in unpaid orders.', over.max_units),
      jsonb_build_object(
        'product_id', over.product_id, 'limit', over.max_units, 'held', over.held, 'requested', over.added,
        'remaining', greatest(over.max_units - over.held, 0)
      ),
      format(
        'Order at most %s more units of this product, or pay or cancel the unpaid orders that hold it.',
        greatest(over.max_units - over.held, 0)
      )
    );
  end if;
end;
$$;

comment on function core.check_order_limits(bigint, bigint[], integer[], boolean) is
'The limits on one customer''s unpaid (pending) orders, checked under the customer''s lock
(core.lock_customer_orders, taken here if the caller has not yet): with new_order, at most
core.max_open_orders() of them (PT409 too_many_open_orders {limit, open_orders}); for each product,
the units held in them plus the units added now at most the product''s max_per_customer, else
core.max_units_per_product() (PT409 per_customer_limit {product_id, limit, held, requested, remaining}).
Units a request gives back are never refused.';

commit;
