-- Revert commercecore:procedures/auth/sessions from pg
begin;

drop function auth.user_claims(bigint);
drop function auth.revoke_user_sessions(bigint);
drop function auth.revoke_session(uuid);
drop function auth.session_active(uuid, bigint, text);
drop function auth.create_session(bigint, uuid, timestamptz, text);

commit;
