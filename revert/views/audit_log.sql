-- Revert commercecore:views/audit_log from pg
begin;

set local role app_owner;

drop view audit.log;
drop function audit.mask_row(jsonb);

commit;
