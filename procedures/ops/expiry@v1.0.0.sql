-- Deploy commercecore:procedures/ops/expiry to pg
-- requires: procedures/orders/limits
-- requires: schema/payments
-- The expiry of unpaid orders, run by `commercecore jobs run`: their stock goes back through the ledger and
-- their open checkout attempts close with them.
begin;

set local role app_owner;

create or replace function ops.expire_unpaid_orders(ttl interval default '30 minutes', max_age interval default null)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  age_limit interval := coalesce(expire_unpaid_orders.max_age, core.order_max_unpaid_age());
  cutoff timestamptz := pg_catalog.now() - expire_unpaid_orders.ttl;
  age_cutoff timestamptz;
  candidate bigint;
  ord core.orders;
  past_max_age boolean;
  live_attempts integer;
  locked_attempts integer;
  expired integer := 0;
begin
  if expire_unpaid_orders.ttl is null or expire_unpaid_orders.ttl <= interval '0' then
    perform core.raise_invalid(
      'ttl', 'The time to live of unpaid orders must be positive.',
      pg_catalog.jsonb_build_object('value', expire_unpaid_orders.ttl), 'For example ''30 minutes''.'
    );
  end if;
  if age_limit <= interval '0' then
    perform core.raise_invalid(
      'max_age', 'The maximum age of unpaid orders must be positive.',
      pg_catalog.jsonb_build_object('value', age_limit), 'For example ''60 minutes''.'
    );
  end if;
  age_cutoff := pg_catalog.now() - age_limit;

  for candidate in
    select o.id
    from core.orders as o
    where o.status = 'pending' and o.created_at <= greatest(cutoff, age_cutoff)
    order by o.id
  loop
    -- lock order, as in billing: the order's live attempts, then the order; anything busy (a webhook or a
    -- checkout at work on it right now) is skipped and looked at again by the next run
    select count(*) into live_attempts
    from core.payments as p where p.order_id = candidate and p.status in ('created', 'open');
    select count(*) into locked_attempts
    from (
      select from core.payments as p
      where p.order_id = candidate and p.status in ('created', 'open')
      order by p.id
      for update skip locked
    ) as locked;
    continue when locked_attempts < live_attempts;
    select o.* into ord from core.orders as o where o.id = candidate for update skip locked;
    continue when not found;

    -- decided under the locks. Past its maximum age an unpaid order ends whatever its attempts: checkouts
    -- never extend it (a payment that still arrives is refunded). Younger, it is stale after ttl, but never
    -- under a customer who has paid (a succeeded payment, e.g. one waiting for its refund, keeps the order
    -- for staff) or may be paying right now (an attempt started within the ttl, or a checkout session that
    -- has not expired at Stripe yet)
    continue when ord.status <> 'pending';
    past_max_age := ord.created_at <= age_cutoff;
    continue when not past_max_age and ord.created_at >= cutoff;
    continue when not past_max_age and exists (
      select from core.payments as p
      where
        p.order_id = ord.id
        and (
          p.status = 'succeeded'
          or (p.status in ('created', 'open') and (p.created_at >= cutoff or p.expires_at > pg_catalog.now()))
        )
    );

    -- restock what the order still holds according to the ledger, products locked in id order
    perform from core.products as pr
    where pr.id in (select m.product_id from core.inventory_movements as m where m.order_id = ord.id)
    order by pr.id
    for no key update;
    insert into core.inventory_movements (product_id, delta, reason, order_id, note)
    select
      m.product_id,
      -sum(m.delta)::integer,
      'order_expired',
      ord.id,
      case when past_max_age then 'unpaid order reached its maximum age' else 'unpaid order expired' end
    from core.inventory_movements as m
    where m.order_id = ord.id
    group by m.product_id
    having sum(m.delta) < 0
    order by m.product_id;

    -- the attempts that were never paid close with the order; a success arriving later is refunded
    update core.payments as p
    set
      status = case when p.status = 'open' and p.expires_at <= pg_catalog.now() then 'expired' else 'canceled' end,
      failure_reason = 'order_expired'
    where p.order_id = ord.id and p.status in ('created', 'open');

    update core.orders as o
    set status = 'cancelled', cancelled_at = pg_catalog.now(), cancel_reason = 'expired'
    where o.id = ord.id;
    expired := expired + 1;
  end loop;
  return expired;
end;
$$;

comment on function ops.expire_unpaid_orders(interval, interval) is
'Cancels unpaid (pending) orders (cancel_reason expired) and puts their stock back (ledger reason
order_expired, the quantities the ledger still holds for the order). An order ends at max_age after its
creation (null: core.order_max_unpaid_age(), the setting commercecore.order_max_unpaid_age, else 60
minutes) whatever its checkout attempts, so that new attempts cannot keep stock unpaid. Before that it ends
once created more than ttl ago, unless its customer has paid or may be paying: any succeeded payment (it
waits for staff), any created/open attempt started within the ttl, or an open checkout session whose
expires_at is still ahead. The order''s remaining created/open attempts close with it: expired when their
session has expired, else canceled (failure_reason order_expired); a success that arrives later is recorded
and refunded. Rows busy in another transaction are skipped (lock order: payments, then the order, for
update skip locked) and retried by the next run. Returns the number of orders expired. Run by
`commercecore jobs run` (ttl: --ttl or ORDER_PAYMENT_TTL; max_age: --max-age or ORDER_MAX_UNPAID_AGE).';

grant execute on function ops.expire_unpaid_orders(interval, interval) to app_dba;

commit;
