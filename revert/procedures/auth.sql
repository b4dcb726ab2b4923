-- Revert commercecore:procedures/auth from pg
begin;

drop function api.set_user_role(bigint, text);
drop function auth.user_claims(bigint);
drop function auth.upgrade_password_hash(bigint, text, text);
drop function auth.change_password(bigint, text);
drop function auth.revoke_user_sessions(bigint);
drop function auth.revoke_session(uuid);
drop function auth.session_active(uuid, bigint, text);
drop function auth.create_session(bigint, uuid, timestamptz, text);
drop function auth.record_login_success(bigint, inet);
drop function auth.record_login_failure(text, inet, integer, interval, interval);
drop function auth.login_delay(text, inet);
drop function auth.login_lookup(text);
drop function auth.register_user(text, text, text);

commit;
