-- Revert commercecore:procedures/catalog/reads from pg
begin;

drop function api.get_product(bigint);
drop function core.product_json(bigint, boolean);

commit;
