-- Revert commercecore:procedures/errors from pg
begin;

drop function core.raise_invalid(text, text, jsonb, text);
drop function core.raise_not_found(text, anyelement, text, text);
drop function core.raise_error(text, text, text, jsonb, text);

commit;
