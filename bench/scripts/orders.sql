-- POST /orders as the gateway runs it: the session check, the request context, create_order.
-- Run with -M extended: pgbench sends the variables as parameters, as the gateway does.
\set pid random(:first_id, :last_id)
begin;
select auth.session_active(:jti::uuid, :user_id::bigint, 'app_readwrite'),
       set_config('role', 'app_readwrite', true),
       set_config('request.jwt.claims', :claims, true), set_config('request.id', 'pgbench', true),
       set_config('request.method', 'POST', true), set_config('request.path', '/orders', true),
       set_config('statement_timeout', '5s', true);
select api.create_order(jsonb_build_array(jsonb_build_object('product_id', :pid::bigint, 'quantity', 1)))::text;
commit;
