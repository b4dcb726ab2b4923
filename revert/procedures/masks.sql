-- Revert commercecore:procedures/masks from pg
begin;

drop function audit.mask_row(jsonb);
drop function core.mask_email(text);
drop function core.mask_provider_id(text);

commit;
