-- Deploy commercecore:schema/auth to pg
-- requires: schema/users
-- Credentials and sessions. The database never sees a password: the gateway hashes with argon2id and
-- stores the hash; a session is a JWT id that can be revoked.
begin;

set local role app_owner;

create table auth.credentials (
  user_id bigint not null,
  password_hash text not null,
  failed_attempts integer not null default 0,
  locked_until timestamptz,
  password_changed_at timestamptz not null default now(),
  constraint credentials_pkey primary key (user_id),
  constraint credentials_user_id_fkey foreign key (user_id) references core.users (id) on delete cascade,
  -- the whole PHC string (salt and hash included), so a plain password can never be stored by mistake
  constraint credentials_password_hash_check check (
    password_hash ~ '^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}$'
  ),
  constraint credentials_failed_attempts_check check (failed_attempts >= 0)
);

comment on table auth.credentials is 'Password hashes (argon2id, made by the gateway) and the failed-login counter.';
comment on column auth.credentials.locked_until is 'Logins are refused until then, after too many failures in a row.';

create table auth.sessions (
  jti uuid not null,
  user_id bigint not null,
  issued_at timestamptz not null default now(),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  user_agent text not null default '',
  constraint sessions_pkey primary key (jti),
  constraint sessions_user_id_fkey foreign key (user_id) references core.users (id) on delete cascade,
  constraint sessions_expires_at_check check (expires_at > issued_at),
  constraint sessions_user_agent_check check (length(user_agent) <= 500)
);

comment on table auth.sessions is 'One row per issued JWT (its jti): a revoked or expired session authorises nothing.';

create index sessions_user_id_idx on auth.sessions (user_id) where revoked_at is null;
create index sessions_expires_at_idx on auth.sessions (expires_at);

commit;
