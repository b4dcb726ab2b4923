-- Revert commercecore:procedures/catalog/stock from pg
begin;

drop function api.adjust_stock(bigint, integer, text, text);

commit;
