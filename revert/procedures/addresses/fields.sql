-- Revert commercecore:procedures/addresses/fields from pg
begin;

drop function core.address_not_found(bigint);
drop function core.address_json(core.addresses);
drop function core.address_country(text);
drop function core.address_kind(text);
drop function core.address_field(text, text, boolean, integer);
drop function core.is_country_code(text);

commit;
