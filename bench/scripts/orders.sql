-- POST /orders as the gateway runs it: the session check, the request context, create_order.
-- Run with -M extended: pgbench sends the variables as parameters, as the gateway does.
-- one buyer places every order: the shop's limits on a customer's unpaid orders are set out of reach, as
-- the benchmark gateway's are (its other request settings as the gateway sends them)
\set pid random(:first_id, :last_id)
begin;
select auth.session_active(:jti::uuid, :user_id::bigint, 'app_readwrite'),
       set_config('role', 'app_readwrite', true),
       set_config('request.jwt.claims', :claims, true), set_config('request.id', 'pgbench', true),
       set_config('request.method', 'POST', true), set_config('request.path', '/orders', true),
       set_config('statement_timeout', '5s', true),
       set_config('commercecore.max_open_orders', '2147483647', true),
       set_config('commercecore.max_units_per_product', '2147483647', true),
       set_config('commercecore.order_max_unpaid_age', '3600 seconds', true);
select api.create_order(jsonb_build_array(jsonb_build_object('product_id', :pid::bigint, 'quantity', 1)))::text;
commit;
