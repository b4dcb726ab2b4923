-- Revert commercecore:schema/namespaces from pg
begin;

alter default privileges for role app_owner grant execute on functions to public;

-- restrict, not cascade: a schema that still holds objects means a later change was not reverted
drop schema audit;
drop schema ops;
drop schema billing;
drop schema auth;
drop schema api;
drop schema core;

commit;
