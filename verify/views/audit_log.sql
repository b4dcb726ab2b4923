-- Verify commercecore:views/audit_log on pg
begin;

select
  id, at, actor_user_id, actor_role, request_id, table_name, operation, row_id, old_row, new_row,
  transaction_id, changed_columns
from audit.log where false;

select 1 / has_table_privilege('app_dba', 'audit.log', 'select')::int;
select 1 / (not has_any_column_privilege('app_dba', 'audit.log_entries', 'select'))::int;

-- behaviour: the owner reads the row in full, app_dba masked
select set_config('request.id', 'verify-audit-log', true);
insert into core.users (email) values ('verify-audit-log@example.com');
select 1 / count(*)::int from audit.log
where request_id = 'verify-audit-log' and new_row ->> 'email' = 'verify-audit-log@example.com';
set local role app_dba;
select 1 / count(*)::int from audit.log
where request_id = 'verify-audit-log' and new_row ->> 'email' = 'v***@example.com';
reset role;

rollback;
