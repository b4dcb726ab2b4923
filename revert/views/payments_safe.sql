-- Revert commercecore:views/payments_safe from pg
begin;

set local role app_owner;

revoke usage on schema api from app_dba;
drop view api.v_payments_safe;

commit;
