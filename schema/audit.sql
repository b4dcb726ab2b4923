-- Deploy commercecore:schema/audit to pg
-- requires: schema/users
-- requires: schema/orders
-- requires: schema/payments
-- requires: procedures/context
-- The audit log: who changed what, with the old and new rows and the gateway's request id, written by
-- triggers on users, products, orders and payments. The rows, emails and Stripe ids in full, are the owner's
-- alone; app_dba reads them masked through the view audit.log (views/audit_log). The trigger function
-- stays beside its table: the two are one object group.
begin;

set local role app_owner;

create table audit.log_entries (
  id bigint generated always as identity,
  at timestamptz not null default clock_timestamp(),
  actor_user_id bigint,
  actor_role text not null,
  request_id text,
  table_name text not null,
  operation text not null,
  row_id text not null,
  old_row jsonb,
  new_row jsonb,
  transaction_id xid8 not null default pg_current_xact_id(),
  constraint log_entries_pkey primary key (id),
  constraint log_entries_operation_check check (operation in ('INSERT', 'UPDATE', 'DELETE'))
);

comment on table audit.log_entries is
'Every change to users, products, orders and payments: actor, request id, old and new rows, in full (emails,
Stripe ids). The owner''s alone: app_dba reads audit.log, where they are masked.';
comment on column audit.log_entries.actor_user_id is 'The JWT `sub` of the request that made the change (null for jobs and DBAs).';
comment on column audit.log_entries.actor_role is 'The request role, or the login of a direct session.';
comment on column audit.log_entries.request_id is 'The gateway''s X-Request-Id: the same id is in the access log.';
comment on column audit.log_entries.transaction_id is 'The transaction, to find the change in the WAL (pg_waldump) or group rows.';

create index log_entries_table_name_at_idx on audit.log_entries (table_name, at desc);
create index log_entries_request_id_idx on audit.log_entries (request_id) where request_id is not null;
create index log_entries_actor_user_id_idx on audit.log_entries (actor_user_id, at desc)
where actor_user_id is not null;

create function audit.record_change() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  old_row jsonb := case when tg_op in ('UPDATE', 'DELETE') then to_jsonb(old) end;
  new_row jsonb := case when tg_op in ('INSERT', 'UPDATE') then to_jsonb(new) end;
begin
  -- search vectors are derived data and would only bloat the log
  old_row := old_row - 'search';
  new_row := new_row - 'search';
  -- nothing changed, or only a product's stock: the inventory ledger already records every stock move
  if tg_op = 'UPDATE' and old_row - '{updated_at,stock}'::text[] = new_row - '{updated_at,stock}'::text[] then
    return null;
  end if;
  insert into audit.log_entries (
    actor_user_id, actor_role, request_id, table_name, operation, row_id, old_row, new_row
  )
  values (
    core.current_user_id(),
    case core.request_role() when 'none' then session_user::text else core.request_role() end,
    core.request_id(),
    tg_table_schema || '.' || tg_table_name,
    tg_op,
    coalesce(new_row ->> 'id', old_row ->> 'id'),
    old_row,
    new_row
  );
  return null;
end;
$$;

comment on function audit.record_change() is
'Trigger: writes one audit.log_entries row per changed row (no-op updates and stock-only moves are skipped).';

create trigger users_audit after insert or update or delete on core.users
for each row execute function audit.record_change();
create trigger products_audit after insert or update or delete on core.products
for each row execute function audit.record_change();
create trigger orders_audit after insert or update or delete on core.orders
for each row execute function audit.record_change();
create trigger payments_audit after insert or update or delete on core.payments
for each row execute function audit.record_change();

commit;
