-- Deploy commercecore:roles/base to pg
-- The roles of docs/architecture.md ("Roles"). Roles belong to the cluster, not to one database: a second
-- database on the same cluster (a test template, a restore drill) finds them already there, so every
-- statement is re-runnable.
begin;

do $$
declare
  wanted record;
begin
  for wanted in
    select * from (values
      ('app_owner'), ('app_readonly'), ('app_readwrite'), ('app_admin'),
      ('app_payments'), ('app_dba'), ('authenticator')
    ) as roles (name)
  loop
    if not exists (select from pg_catalog.pg_roles where rolname = wanted.name) then
      execute format('create role %I', wanted.name);
    end if;
  end loop;
end;
$$;

-- attributes are set every time, so a role that pre-existed with other ones is brought in line
alter role app_owner nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
alter role app_readonly nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
alter role app_readwrite nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
alter role app_admin nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
alter role app_payments nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
alter role app_dba nologin inherit nosuperuser nocreatedb nocreaterole nobypassrls;
alter role authenticator login noinherit nosuperuser nocreatedb nocreaterole nobypassrls;

-- a runaway statement of a request is cut off by its role's timeout (the gateway applies these per request,
-- since SET ROLE does not load role settings)
alter role authenticator set statement_timeout = '10s';
alter role authenticator set idle_in_transaction_session_timeout = '30s';
alter role app_readonly set statement_timeout = '3s';
alter role app_readwrite set statement_timeout = '5s';
alter role app_admin set statement_timeout = '15s';
alter role app_payments set statement_timeout = '10s';
alter role app_dba set statement_timeout = '60s';

-- the gateway may switch to the request roles but inherits none of their privileges: a grant to a
-- NOINHERIT role is made WITH INHERIT FALSE (PostgreSQL 16+), verified below
grant app_readonly to authenticator;
grant app_readwrite to authenticator;
grant app_admin to authenticator;
grant app_payments to authenticator;
grant pg_monitor to app_dba;

comment on role app_owner is 'Owns every object of CommerceCore DBX; deployments run as it.';
comment on role app_readonly is 'Anonymous visitors and read-only integrations: the public catalog only.';
comment on role app_readwrite is 'Signed-in customers: their own profile, addresses, orders and payments.';
comment on role app_admin is 'Staff: the catalog, all orders, refunds.';
comment on role app_payments is
'The gateway''s Stripe paths (checkout, webhooks, reconciliation); never selectable by a JWT.';
comment on role app_dba is 'Monitoring and audit reading; member of pg_monitor.';
comment on role authenticator is 'The gateway''s login: it can only SET ROLE to the request roles.';

-- only the gateway and the project's own roles connect; PUBLIC gets nothing on this database
do $$
begin
  execute format('revoke all on database %I from public', current_database());
  execute format(
    'grant connect on database %I to authenticator, app_owner, app_dba', current_database()
  );
end;
$$;

commit;
