-- Deploy commercecore:schema/users to pg
-- requires: procedures/context
-- requires: schema/updated_at
-- Customers and staff, and their addresses. Credentials live apart, in auth.credentials.
begin;

set local role app_owner;

create table core.users (
  id bigint generated always as identity,
  email text not null,
  full_name text not null default '',
  role text not null default 'app_readwrite',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint users_pkey primary key (id),
  constraint users_email_key unique (email),
  constraint users_email_check check (email = lower(email) and email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' and length(email) <= 254),
  constraint users_full_name_check check (length(full_name) <= 200),
  constraint users_role_check check (role in ('app_readwrite', 'app_admin'))
);

comment on table core.users is 'Customers and staff. The id is the JWT `sub`; the role is the JWT `role` claim.';
comment on column core.users.email is 'Lower-cased at the api boundary; unique.';
comment on column core.users.role is 'The request role the user''s tokens carry: app_readwrite (customer) or app_admin (staff).';

create trigger users_set_updated_at before update on core.users
for each row execute function core.set_updated_at();

alter table core.users enable row level security;
alter table core.users force row level security;

create policy users_owner on core.users
using (id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()));

comment on policy users_owner on core.users is 'A customer sees and changes only their own row; staff and services see all.';

create table core.addresses (
  id bigint generated always as identity,
  user_id bigint not null,
  kind text not null,
  is_default boolean not null default false,
  full_name text not null,
  line1 text not null,
  line2 text not null default '',
  city text not null,
  region text not null default '',
  postal_code text not null,
  country text not null,
  phone text not null default '',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint addresses_pkey primary key (id),
  constraint addresses_user_id_fkey foreign key (user_id) references core.users (id) on delete cascade,
  constraint addresses_kind_check check (kind in ('shipping', 'billing')),
  constraint addresses_country_check check (country ~ '^[A-Z]{2}$'),
  constraint addresses_text_check check (
    length(full_name) between 1 and 200 and length(line1) between 1 and 200 and length(line2) <= 200
    and length(city) between 1 and 100 and length(region) <= 100 and length(postal_code) between 1 and 20
    and length(phone) <= 40
  )
);

comment on table core.addresses is 'Shipping and billing addresses of a user; at most one default of each kind.';
comment on column core.addresses.country is 'ISO 3166-1 alpha-2 code, upper case.';

create unique index addresses_one_default_per_kind on core.addresses (user_id, kind) where is_default;
comment on index core.addresses_one_default_per_kind is 'At most one default address per user and kind.';
create index addresses_user_id_idx on core.addresses (user_id);

create trigger addresses_set_updated_at before update on core.addresses
for each row execute function core.set_updated_at();

alter table core.addresses enable row level security;
alter table core.addresses force row level security;

create policy addresses_owner on core.addresses
using (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()))
with check (user_id = (select core.current_user_id()) or (select core.is_admin()) or (select core.is_service()));

comment on policy addresses_owner on core.addresses is 'A customer sees and changes only their own addresses.';

commit;
