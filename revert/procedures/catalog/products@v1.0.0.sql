-- Revert commercecore:procedures/catalog/products from pg
begin;

drop function api.update_product(bigint, text, text, text, bigint, text, bigint, boolean, bigint, integer, text[]);
drop function api.create_product(text, text, bigint, text, text, bigint, integer, boolean, bigint, integer);
drop function core.check_product_fields(text, text, text, bigint, text, bigint, bigint, integer);

commit;
