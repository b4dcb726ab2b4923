-- POST /orders of one unit of a product drawn from [first_id, last_id] (one id: the hot product), sent as
-- the gateway sends it: two pipelined batches, the session check first (as the authenticator), then the
-- request context, create_order and the commit in one go, so no round trip falls inside the stock lock.
\set pid random(:first_id, :last_id)
\startpipeline
begin;
select auth.session_active(:jti::uuid, :user_id::bigint, 'app_readwrite');
\endpipeline
\startpipeline
select set_config('role', 'app_readwrite', true), set_config('request.jwt.claims', :claims, true),
       set_config('request.id', 'pgbench', true), set_config('request.method', 'POST', true),
       set_config('request.path', '/orders', true), set_config('statement_timeout', '5s', true);
select api.create_order(jsonb_build_array(jsonb_build_object('product_id', :pid::bigint, 'quantity', 1)))::text;
commit;
\endpipeline
