-- Deploy commercecore:schema/housekeeping to pg
-- requires: schema/namespaces
-- What `commercecore jobs run` has purged so far, per table: the running totals /metrics reports.
begin;

set local role app_owner;

create table ops.purged_rows (
  table_name text not null,
  purged_rows bigint not null default 0,
  last_purged_at timestamptz,
  constraint purged_rows_pkey primary key (table_name),
  constraint purged_rows_table_name_check check (
    table_name in ('auth.sessions', 'auth.login_failures', 'core.idempotency_keys')
  ),
  constraint purged_rows_purged_rows_check check (purged_rows >= 0)
);

comment on table ops.purged_rows is
'Rows deleted by ops.purge_batch since the table was created, per purged table (a counter for /metrics).';
comment on column ops.purged_rows.last_purged_at is 'The latest batch, whether it found rows or not.';

insert into ops.purged_rows (table_name)
values ('auth.sessions'), ('auth.login_failures'), ('core.idempotency_keys');

commit;
