-- Revert commercecore:procedures/orders/create from pg
begin;

drop function api.create_order(jsonb, bigint, text);

commit;
