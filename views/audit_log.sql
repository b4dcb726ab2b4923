-- Deploy commercecore:views/audit_log to pg
-- requires: schema/audit
-- requires: procedures/masks
-- audit.log: the audit trail as its readers see it. The owner (app_owner, and superusers) reads the rows of
-- audit.log_entries in full; anyone else (app_dba) with emails and Stripe ids masked by audit.mask_row
-- (procedures/masks), in the old and new rows.
begin;

set local role app_owner;

-- no security_barrier: the view filters no rows (nothing to leak through a caller's WHERE), and a caller's
-- conditions on the plain columns (table_name, request_id, at) then reach the table's indexes, with the masks
-- computed only for the rows returned
create view audit.log as
select
  e.id,
  e.at,
  e.actor_user_id,
  e.actor_role,
  e.request_id,
  e.table_name,
  e.operation,
  e.row_id,
  -- who reads: asked once per query (an uncorrelated subquery); the view reads the table with its owner's
  -- rights, but current_user is the reader
  case
    when (select pg_catalog.pg_has_role('app_owner', 'usage')) then e.old_row else audit.mask_row(e.old_row)
  end as old_row,
  case
    when (select pg_catalog.pg_has_role('app_owner', 'usage')) then e.new_row else audit.mask_row(e.new_row)
  end as new_row,
  e.transaction_id,
  -- from the rows in full: two emails can mask alike and still differ
  case
    when e.operation = 'UPDATE'
      then
        array(
          select n.key from pg_catalog.jsonb_each(e.new_row) as n
          where n.value is distinct from e.old_row -> n.key
          order by n.key
        )
  end as changed_columns
from audit.log_entries as e;

comment on view audit.log is
'The audit trail: every change to users, products, orders and payments, with actor, request id, old and new
rows. The owner (app_owner, superusers) reads the rows in full; app_dba with emails and Stripe ids masked
(audit.mask_row).';
comment on column audit.log.old_row is 'The row before the change (UPDATE, DELETE); masked unless the reader is the owner.';
comment on column audit.log.new_row is 'The row after the change (INSERT, UPDATE); masked unless the reader is the owner.';
comment on column audit.log.changed_columns is 'For an UPDATE, the fields whose values changed (compared in full).';
comment on column audit.log.actor_user_id is 'The JWT `sub` of the request that made the change (null for jobs and DBAs).';
comment on column audit.log.request_id is 'The gateway''s X-Request-Id: the same id is in the access log.';

grant select on audit.log to app_dba;

commit;
