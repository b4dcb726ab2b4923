-- POST /orders as the gateway runs it: the session check, the request context, create_order.
-- Run with -M extended: pgbench sends the variables as parameters, as the gateway does.
-- Each client is a buyer of its own (bench.buyers, row :client_id, read on the client's first run): a
-- customer's orders queue on the customer's lock. The shop's limits on unpaid orders are the benchmark's
-- (:max_open_orders, :max_units_per_product, as its gateway has them); the other request settings as the
-- gateway sends them.
\if :buyer_read = 0
select user_id, jti, claims, 1 as buyer_read from bench.buyers where client_id = :client_id \gset
\endif
\set pid random(:first_id, :last_id)
begin;
select auth.session_active(:jti::uuid, :user_id::bigint, 'app_readwrite'),
       set_config('role', 'app_readwrite', true),
       set_config('request.jwt.claims', :claims, true), set_config('request.id', 'pgbench', true),
       set_config('request.method', 'POST', true), set_config('request.path', '/orders', true),
       set_config('statement_timeout', '5s', true),
       set_config('commercecore.max_open_orders', :max_open_orders, true),
       set_config('commercecore.max_units_per_product', :max_units_per_product, true),
       set_config('commercecore.order_max_unpaid_age', '3600 seconds', true);
select api.create_order(jsonb_build_array(jsonb_build_object('product_id', :pid::bigint, 'quantity', 1)))::text;
commit;
