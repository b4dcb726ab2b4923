-- Revert commercecore:procedures/orders/limits from pg
begin;

drop function core.check_order_limits(bigint, bigint[], integer[], boolean);
drop function core.lock_customer_orders(bigint);
drop function core.check_unpaid_age(core.orders);
drop function core.max_units_per_product();
drop function core.max_open_orders();
drop function core.order_max_unpaid_age();

commit;
