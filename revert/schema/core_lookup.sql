-- Revert commercecore:schema/core_lookup from pg
begin;

revoke usage on schema core from app_dba;

comment on schema core is
'Tables, types and triggers of the product. Nobody but the owner; all access goes through api.';

commit;
