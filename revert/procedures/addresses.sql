-- Revert commercecore:procedures/addresses from pg
begin;

drop function api.delete_address(bigint);
drop function api.update_address(bigint, text, text, text, text, text, text, text, text, text, boolean);
drop function api.create_address(text, text, text, text, text, text, text, text, text, boolean);
drop view api.addresses;
drop function api.my_addresses();
drop function core.lock_address_owner();
drop function core.address_not_found(bigint);
drop function core.address_json(core.addresses);
drop function core.address_country(text);
drop function core.address_kind(text);
drop function core.address_field(text, text, boolean, integer);
drop function core.is_country_code(text);

commit;
