-- Deploy commercecore:views/sales_daily to pg
-- requires: schema/orders
-- The daily sales report, a materialized view refreshed by ops.refresh_sales_daily (procedures/ops/reports).
-- Readable by DBAs and staff.
begin;

set local role app_owner;

create materialized view ops.sales_daily as
select
  (o.paid_at at time zone 'UTC')::date as day,
  o.currency,
  count(*)::bigint as orders_paid,
  sum(o.total_minor)::bigint as revenue_minor,
  sum(o.refunded_minor)::bigint as refunded_minor,
  coalesce(sum(i.units), 0)::bigint as units
from core.orders as o
left join lateral (
  select sum(oi.quantity) as units from core.order_items as oi where oi.order_id = o.id
) as i on true
where o.status in ('paid', 'refunded')
group by (o.paid_at at time zone 'UTC')::date, o.currency
with data;

comment on materialized view ops.sales_daily is
'Paid orders per UTC day of payment and currency: orders_paid, revenue_minor (their totals), refunded_minor
(refunded on them so far), units (items sold). Refreshed by ops.refresh_sales_daily().';

grant select on ops.sales_daily to app_dba, app_admin;

create unique index sales_daily_day_currency_key on ops.sales_daily (day, currency);
comment on index ops.sales_daily_day_currency_key is 'One row per day and currency; lets the report refresh concurrently.';

commit;
