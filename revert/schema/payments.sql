-- Revert commercecore:schema/payments from pg
begin;

drop table core.stripe_events;
drop table core.refunds;
drop table core.payments;

commit;
