-- GET /products?limit=20 as the gateway runs it: one read-only transaction, the request context in one
-- statement, the page built as JSON by PostgreSQL.
begin isolation level read committed read only;
select set_config('role', 'app_readonly', true), set_config('request.jwt.claims', '{"role":"app_readonly"}', true),
       set_config('request.id', 'pgbench', true), set_config('request.method', 'GET', true),
       set_config('request.path', '/products', true), set_config('max_parallel_workers_per_gather', '0', true),
       set_config('statement_timeout', '1000ms', true);
select coalesce(json_agg(t), '[]')::text from (select * from api.products limit 20) as t;
commit;
