-- Revert commercecore:schema/audit from pg
begin;

drop trigger payments_audit on core.payments;
drop trigger orders_audit on core.orders;
drop trigger products_audit on core.products;
drop trigger users_audit on core.users;
drop function audit.record_change();
drop table audit.log_entries;

commit;
