"""Gateway tests: the ASGI app over httpx against a committed clone of the deployed template, connected as
the `authenticator` (as in production), with a few test-only objects in `api` for the dialect and the
error mapping (schema `gwtest`, functions and a view named gw_*), and a small catalog of products.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql
from starlette.applications import Starlette

from gateway.app import Gateway, create_app
from gateway.settings import RATES_OFF, Settings
from tests.conftest import PgServer

SECRET = "gw-test-" + secrets.token_urlsafe(40)
PASSWORD = "correct horse battery"

FIXTURE_SQL = """
create schema gwtest;

create table gwtest.things (
  id bigint generated always as identity primary key,
  name text not null unique,
  tags text[] not null default '{}',
  flag boolean,
  doc jsonb,
  price numeric(10, 2),
  at timestamptz,
  note varchar(20),
  search tsvector generated always as (to_tsvector('english', name || ' ' || coalesce(note, ''))) stored
);

insert into gwtest.things (name, tags, flag, doc, price, at, note) values
  ('alpha', '{red,blue}', true, '{"k": 1}', 10.50, '2026-01-01T00:00:00Z', 'first thing'),
  ('beta', '{blue}', false, '{"k": 2}', 20.00, '2026-02-01T00:00:00Z', null),
  ('gamma', '{}', null, null, 30.25, '2026-03-01T00:00:00Z', 'quick brown foxes'),
  ('delta''s "quoted", (x)', '{green}', true, '[1, 2]', null, null, 'with % and _ and *'),
  ('epsilon', '{red}', false, '{"k": 5}', 50.00, '2026-05-01T00:00:00Z', 'jumping foxes');

create view api.gw_things with (security_barrier) as
select id, name, tags, flag, doc, price, at, note, search from gwtest.things;
comment on view api.gw_things is 'Test things.
@route GET /gw/things/{id}
@route GET /gw/all-things
@search search, name
@pattern name, note
@order id, name, price, flag, at';
comment on column api.gw_things.note is 'A short note.';
grant select on api.gw_things to app_readonly, app_readwrite, app_admin;

create function api.gw_echo(
  a integer, b text default 'x', tags text[] default null, doc jsonb default null,
  flag boolean default null, at timestamptz default null, price numeric default null
) returns jsonb language sql stable as $$
  select jsonb_build_object('a', a, 'b', b, 'tags', tags, 'doc', doc, 'flag', flag, 'at', at, 'price', price,
    'claims', current_setting('request.jwt.claims', true), 'role', current_setting('role'),
    'request_id', current_setting('request.id', true), 'method', current_setting('request.method', true),
    'path', current_setting('request.path', true), 'timeout', current_setting('statement_timeout'),
    'read_only', current_setting('transaction_read_only'))
$$;
comment on function api.gw_echo(integer, text, text[], jsonb, boolean, timestamptz, numeric) is 'Echoes.
@route GET /gw/echo/{a}
@route POST /gw/echo/{a}';

create function api.gw_write(name text, idempotency_key text default null) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  new_id bigint;
begin
  insert into gwtest.things (name) values (gw_write.name) returning id into new_id;
  perform set_config('response.status', '201', true);
  perform set_config('response.headers', jsonb_build_array(
    jsonb_build_object('Location', '/gw/things/' || new_id),
    jsonb_build_object('X-Idempotency', coalesce(gw_write.idempotency_key, '-')))::text, true);
  return jsonb_build_object('id', new_id, 'name', gw_write.name, 'idempotency_key', gw_write.idempotency_key);
end;
$$;
comment on function api.gw_write(text, text) is 'Writes a thing.
@route POST /gw/things';

create function api.gw_fail(kind text) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if kind = 'pt409' then
    raise exception using errcode = 'PT409', message = 'Not enough.',
      detail = jsonb_build_object(
        'code', 'insufficient_stock', 'product_id', 1, 'requested', 5, 'available', 2)::text,
      hint = 'Order less.';
  elsif kind = 'plain_detail' then
    raise exception using errcode = 'PT422', message = 'Bad.', detail = 'not json';
  elsif kind = 'unique' then
    insert into gwtest.things (name) values ('alpha');
  elsif kind = 'p0001' then
    raise exception 'boom';
  elsif kind = 'div' then
    perform 1 / 0;
  elsif kind = 'internal' then
    raise exception using errcode = 'XX000', message = 'secret internals: /var/lib/postgresql';
  elsif kind = 'timeout' then
    raise exception using errcode = '57014', message = 'canceling statement due to statement timeout';
  elsif kind = 'serialization' then
    raise exception using errcode = '40001', message = 'could not serialize access';
  elsif kind = 'undefined' then
    perform gwtest.no_such_function();
  end if;
  return jsonb_build_object('kind', kind);
end;
$$;
comment on function api.gw_fail(text) is 'Fails as asked.';

create function api.gw_void() returns void language sql as $$ select $$;
create function api.gw_setof(n integer) returns table (i integer, label text, even boolean)
language sql stable as $$ select g, 'n' || g, g % 2 = 0 from generate_series(1, least(n, 1000)) as g $$;
create function api.gw_scalar(n integer) returns integer language sql immutable as $$ select n * 2 $$;
create function api.gw_admin_only() returns text language sql stable as $$ select 'staff' $$;
create function api.gw_over(a integer) returns text language sql stable as $$ select 'int' $$;
create function api.gw_over(b text) returns text language sql stable as $$ select 'text' $$;
comment on function api.gw_setof(integer) is 'Rows.
@order i';
create function api.gw_variadic(variadic nums integer[]) returns integer language sql immutable
as $$ select coalesce(sum(x), 0)::integer from unnest(nums) as x $$;

revoke all on all functions in schema api from public;
grant execute on function api.gw_echo(integer, text, text[], jsonb, boolean, timestamptz, numeric),
  api.gw_write(text, text), api.gw_fail(text), api.gw_void(), api.gw_setof(integer), api.gw_scalar(integer),
  api.gw_over(integer), api.gw_over(text), api.gw_variadic(integer[])
  to app_readonly, app_readwrite, app_admin;
grant execute on function api.gw_admin_only() to app_admin;

insert into core.categories (slug, name) values ('shoes', 'Shoes'), ('hats', 'Hats');
insert into core.products (sku, name, description, price_minor, currency, category_id, active)
select 'SKU-' || lpad(g::text, 3, '0'),
  'Product ' || g || case when g % 3 = 0 then ' red shoe' else ' blue hat' end,
  'Description of ' || g, 100 * g, 'EUR',
  (select id from core.categories where slug = case when g % 2 = 0 then 'shoes' else 'hats' end), g <> 13
from generate_series(1, 25) as g;
insert into core.inventory_movements (product_id, delta, reason)
select id, 10, 'restock' from core.products;
"""


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def authenticator_password(pg: PgServer) -> str:
    """The authenticator logs in with a password, as the gateway does in production."""
    password = secrets.token_urlsafe(24)
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("alter role authenticator password {}").format(sql.Literal(password)))
    return password


@dataclass(frozen=True)
class GatewayDb:
    admin_url: str  # superuser, for arranging and checking
    gateway_url: str  # authenticator, what the gateway uses


def clone_database(pg: PgServer, template_db: str, password: str, name: str) -> GatewayDb:
    url = pg.create_db(name, template=template_db)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FIXTURE_SQL)
    return GatewayDb(admin_url=url, gateway_url=with_credentials(url, "authenticator", password))


@pytest.fixture(scope="session")
def gw_db(pg: PgServer, template_db: str, authenticator_password: str) -> GatewayDb:
    """A session-wide clone with the test objects and data; tests that must not leave traces use
    `gw_fresh` instead."""
    return clone_database(pg, template_db, authenticator_password, f"cc_gw_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def gw_fresh(pg: PgServer, template_db: str, authenticator_password: str) -> Iterator[GatewayDb]:
    name = f"cc_gwf_{uuid.uuid4().hex[:8]}"
    yield clone_database(pg, template_db, authenticator_password, name)
    pg.drop_db(name)


def settings_for(database: GatewayDb, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database.gateway_url,
        jwt_secret=SECRET,
        cookie_secure=False,
        pool_min=1,
        pool_max=4,
        pool_timeout=5.0,
        # cheap hashes: the tests are about the flow, not the cost
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        # budgets off: many tests sign in many times from one address; tests/gateway/test_throttles.py
        # turns them on one by one
        rate_limits=RATES_OFF,
    )
    return replace(base, **overrides)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, behind an httpx client (no network)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


@pytest.fixture
async def client(gw_db: GatewayDb) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(gw_db))
    async with serve(app) as http:
        yield http


@pytest.fixture
async def peer(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A second client (its own cookies) on the same app."""
    async with httpx.AsyncClient(transport=client._transport, base_url="http://gateway.test") as other:
        yield other


def gateway_of(client: httpx.AsyncClient) -> Gateway:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app: Any = transport.app
    gateway: Gateway = app.state.gateway
    return gateway


async def signup(
    client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    """A new customer signed in with cookies on `client`; returns the user."""
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post(
        "/auth/signup", json={"email": email, "password": password, "full_name": "Test"}
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def bearer(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = await client.post("/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies["cc_csrf"]}


def make_admin(database: GatewayDb, user_id: int) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("update core.users set role = 'app_admin' where id = %s", [user_id])


def data_fingerprint(database: GatewayDb) -> str:
    """A digest of every row the tests could touch: equal before and after means nothing changed."""
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute(
            """
            select md5(concat_ws('|',
              (select string_agg(t::text, ',' order by id) from gwtest.things as t),
              (select string_agg(p::text, ',' order by id) from core.products as p),
              (select string_agg(c::text, ',' order by id) from core.categories as c),
              (select count(*)::text from core.users),
              (select count(*)::text from auth.sessions),
              (select string_agg(c.oid::regclass::text, ',' order by c.oid::regclass::text) from pg_class as c
                 join pg_namespace as n on n.oid = c.relnamespace where n.nspname not like 'pg_%'),
              (select string_agg(p.oid::regprocedure::text, ',' order by p.oid::regprocedure::text)
                 from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
                 where n.nspname not like 'pg_%')
            ))
            """
        ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
async def fresh_client(gw_fresh: GatewayDb) -> AsyncIterator[httpx.AsyncClient]:
    """A client on its own committed clone: for tests that write."""
    async with serve(create_app(settings_for(gw_fresh))) as http:
        yield http
