-- Revert commercecore:procedures/auth/logins from pg
begin;

drop function auth.record_login_success(bigint, inet);
drop function auth.record_login_failure(text, inet, integer, interval, interval);
drop function auth.login_delay(text, inet);
drop function auth.login_lookup(text);

commit;
