-- Revert commercecore:procedures/catalog/search from pg
begin;

drop function api.search_products(text, bigint, bigint, bigint, boolean, integer, integer);

commit;
