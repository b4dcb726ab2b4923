-- Deploy commercecore:schema/auth to pg
-- requires: schema/users
-- Credentials and sessions. The database never sees a password: the gateway hashes with argon2id and
-- stores the hash; a session is a JWT id that can be revoked.
begin;

set local role app_owner;

create table auth.credentials (
  user_id bigint not null,
  password_hash text not null,
  password_changed_at timestamptz not null default now(),
  constraint credentials_pkey primary key (user_id),
  constraint credentials_user_id_fkey foreign key (user_id) references core.users (id) on delete cascade,
  -- the whole PHC string (salt and hash included), so a plain password can never be stored by mistake
  constraint credentials_password_hash_check check (
    password_hash ~ '^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}$'
  )
);

comment on table auth.credentials is
'Password hashes (argon2id, made by the gateway). Failed logins are counted per address and client in
auth.login_failures, never on the account: no one can lock an account by failing on purpose.';

create table auth.sessions (
  jti uuid not null,
  user_id bigint not null,
  role text not null,
  issued_at timestamptz not null default now(),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  user_agent text not null default '',
  constraint sessions_pkey primary key (jti),
  constraint sessions_user_id_fkey foreign key (user_id) references core.users (id) on delete cascade,
  constraint sessions_expires_at_check check (expires_at > issued_at),
  constraint sessions_user_agent_check check (length(user_agent) <= 500),
  constraint sessions_role_check check (role in ('app_readwrite', 'app_admin'))
);

comment on table auth.sessions is 'One row per issued JWT (its jti): a revoked or expired session authorises nothing.';
comment on column auth.sessions.role is
'The role the token was issued with: a token whose role claim differs is refused, whoever signed it.';

create index sessions_user_id_idx on auth.sessions (user_id) where revoked_at is null;
create index sessions_expires_at_idx on auth.sessions (expires_at);

commit;
