-- Verify commercecore:schema/audit on pg
begin;

select id, at, actor_user_id, actor_role, request_id, table_name, operation, row_id, old_row, new_row
from audit.log_entries where false;

select 1 / (not has_any_column_privilege('app_dba', 'audit.log_entries', 'select'))::int;

select set_config('request.id', 'verify-audit', true);
insert into core.users (email) values ('verify-audit@example.com');
select 1 / count(*)::int from audit.log_entries where request_id = 'verify-audit' and table_name = 'core.users';

rollback;
