-- Verify commercecore:schema/auth on pg
begin;

select user_id, password_hash, failed_attempts, locked_until from auth.credentials where false;
select jti, user_id, issued_at, expires_at, revoked_at from auth.sessions where false;

rollback;
