-- Deploy commercecore:schema/namespaces to pg
-- requires: roles/base
-- The schemas of docs/architecture.md ("Schemas"), owned by app_owner. `api` is the only one the request
-- roles can reach.
begin;

create schema core authorization app_owner;
comment on schema core is
'Tables, types and triggers of the product. Nobody but the owner; all access goes through api.';

create schema api authorization app_owner;
comment on schema api is 'The HTTP surface: views and functions, reachable by the request roles per grant.';

create schema auth authorization app_owner;
comment on schema auth is
'Credentials and sessions; reached by the gateway''s authenticator through security definer functions.';

create schema billing authorization app_owner;
comment on schema billing is 'The payment state machine and the Stripe event inbox; role app_payments only.';

create schema ops authorization app_owner;
comment on schema ops is 'Monitoring, reporting and maintenance; app_dba, and app_admin for reading.';

create schema audit authorization app_owner;
comment on schema audit is 'The audit log, written by triggers only; app_dba reads it.';

revoke all on schema core, api, auth, billing, ops, audit from public;
grant usage on schema api to app_readonly, app_readwrite, app_admin;
grant usage on schema auth to authenticator;
grant usage on schema billing to app_payments;
grant usage on schema ops to app_dba, app_admin;
grant usage on schema audit to app_dba;

-- functions the owner creates are nobody's to call until a change grants them
alter default privileges for role app_owner revoke execute on functions from public;

commit;
