-- Verify commercecore:schema/auth on pg
begin;

select user_id, password_hash, password_changed_at from auth.credentials where false;
select jti, user_id, role, issued_at, expires_at, revoked_at from auth.sessions where false;

rollback;
