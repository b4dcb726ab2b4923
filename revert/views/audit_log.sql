-- Revert commercecore:views/audit_log from pg
begin;

drop view audit.log;

commit;
