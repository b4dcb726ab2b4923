-- Revert commercecore:procedures/addresses/endpoints from pg
begin;

drop function api.delete_address(bigint);
drop function api.update_address(bigint, text, text, text, text, text, text, text, text, text, boolean);
drop function api.create_address(text, text, text, text, text, text, text, text, text, boolean);
drop function api.my_addresses();

commit;
