-- Revert commercecore:views/products from pg
begin;

drop view api.categories;
drop view api.products;

commit;
