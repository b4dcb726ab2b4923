-- Revert commercecore:views/sales_daily from pg
begin;

drop index ops.sales_daily_day_currency_key;
drop materialized view ops.sales_daily;

commit;
