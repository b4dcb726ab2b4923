-- Revert commercecore:procedures/search_products from pg
begin;

drop function api.search_products(text, bigint, bigint, bigint, boolean, integer, integer);

commit;
