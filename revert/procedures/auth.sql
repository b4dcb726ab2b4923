-- Revert commercecore:procedures/auth from pg
begin;

drop function api.set_user_role(bigint, text);
drop function auth.purge_expired_sessions();
drop function auth.user_claims(bigint);
drop function auth.upgrade_password_hash(bigint, text, text);
drop function auth.change_password(bigint, text);
drop function auth.revoke_user_sessions(bigint);
drop function auth.revoke_session(uuid);
drop function auth.session_active(uuid, bigint);
drop function auth.create_session(bigint, uuid, timestamptz, text);
drop function auth.record_login_success(bigint);
drop function auth.record_login_failure(text, integer, interval);
drop function auth.login_lookup(text);
drop function auth.register_user(text, text, text);

commit;
