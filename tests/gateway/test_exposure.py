"""What the gateway shows to whom: /metrics only with its token (or to a direct loopback client when none is
set), /health without the database's error text, and never a request served by a superuser or BYPASSRLS
login (refused at startup, and on every new pooled connection)."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout

from commercecore.local.embedded import free_port
from gateway.app import create_app
from gateway.guard import UnsafeLogin
from gateway.payments import PaymentService
from tests.conftest import login_url
from tests.gateway.conftest import GatewayDb, gateway_of, serve, settings_for

pytestmark = pytest.mark.anyio

TOKEN = secrets.token_urlsafe(48)
ERROR_KEYS = {"code", "message", "details", "hint"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def gateway_log() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger("commercecore.gateway")
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


def peer_client(client: httpx.AsyncClient, address: str) -> httpx.AsyncClient:
    """Another client of the same app whose connection comes from `address`."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, client=(address, 40000)),
        base_url="http://gateway.test",
    )


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["details"]["code"] == code
    assert "commercecore_http_requests_total" not in response.text
    return body


# -- /metrics ---------------------------------------------------------------------------------------------


async def test_metrics_without_a_token_answer_direct_loopback_clients_only(client: httpx.AsyncClient) -> None:
    # the in-process transport connects from 127.0.0.1
    assert (await client.get("/metrics")).status_code == 200
    async with peer_client(client, "::1") as local6:
        assert (await local6.get("/metrics")).status_code == 200
    async with peer_client(client, "203.0.113.7") as remote:
        body = error_of(await remote.get("/metrics"), 403, "metrics_forbidden")
        assert "COMMERCECORE_METRICS_TOKEN" in body["hint"]
        # a client cannot make itself local by naming a loopback address in a proxy header
        for name in ("X-Forwarded-For", "X-Real-IP"):
            error_of(await remote.get("/metrics", headers={name: "127.0.0.1"}), 403, "metrics_forbidden")
    # a request a local proxy relays comes from the proxy's client, not from this host
    relayed = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
    error_of(relayed, 403, "metrics_forbidden")
    error_of(await client.get("/metrics", headers={"Forwarded": "for=127.0.0.1"}), 403, "metrics_forbidden")


@pytest.fixture
async def token_client(gw_db: GatewayDb) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(settings_for(gw_db, metrics_token=TOKEN))) as http:
        yield http


async def test_metrics_with_a_token_need_it_as_a_bearer_token(token_client: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
    ):
        refused = await token_client.get("/metrics", headers=headers)  # even from the loopback interface
        error_of(refused, 401, "metrics_token_required")
        assert refused.headers["www-authenticate"].startswith("Bearer")
    async with peer_client(token_client, "203.0.113.7") as remote:
        error_of(await remote.get("/metrics"), 401, "metrics_token_required")
        scraped = await remote.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200
        assert "commercecore_http_requests_total" in scraped.text
        # the refusals were counted like any request
        assert 'route="/metrics",status="401"' in scraped.text


# -- /health ----------------------------------------------------------------------------------------------


async def test_health_says_unavailable_without_the_database_error(
    gw_db: GatewayDb, gateway_log: Records
) -> None:
    """A login the database refuses (a wrong password): the answer says unavailable and nothing more."""
    wrong = GatewayDb(gw_db.admin_url, login_url(gw_db.admin_url, "authenticator", "not-the-password"))
    async with serve(create_app(settings_for(wrong, pool_timeout=0.5))) as client:
        health = await client.get("/health")
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "database": "unavailable"}
    # the reason goes to the log
    assert any(m.startswith("health: database unavailable: ") for m in gateway_log.messages)


# -- the gateway's login ------------------------------------------------------------------------------------


@pytest.fixture
def probe_login(gw_db: GatewayDb) -> Iterator[tuple[str, str]]:
    """A login role of its own on the test cluster (roles are cluster-wide): its name and URL."""
    name = f"cc_probe_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    database = conninfo_to_dict(gw_db.admin_url)["dbname"]
    with psycopg.connect(gw_db.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {}").format(sql.Identifier(name), sql.Literal(password))
        )
        conn.execute(
            sql.SQL("grant connect on database {} to {}").format(
                sql.Identifier(str(database)), sql.Identifier(name)
            )
        )
    try:
        yield name, login_url(gw_db.admin_url, name, password)
    finally:
        with psycopg.connect(gw_db.admin_url, autocommit=True) as conn:
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", [name])
            conn.execute(
                sql.SQL("revoke connect on database {} from {}").format(
                    sql.Identifier(str(database)), sql.Identifier(name)
                )
            )
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def alter_login(gw_db: GatewayDb, name: str, attributes: str) -> None:
    with psycopg.connect(gw_db.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("alter role {} " + attributes).format(sql.Identifier(name)))


async def test_a_superuser_login_is_refused_at_startup(gw_db: GatewayDb) -> None:
    superuser = GatewayDb(gw_db.admin_url, gw_db.admin_url)
    with pytest.raises(UnsafeLogin) as refused:
        async with serve(create_app(settings_for(superuser))):
            pytest.fail("the gateway started with a superuser login")
    message = str(refused.value)
    assert "\n" not in message
    assert "is a superuser" in message
    assert "'authenticator'" in message
    role = conninfo_to_dict(gw_db.admin_url)["user"]
    assert f"{role!r}" in message


async def test_a_bypassrls_login_is_refused_at_startup(
    gw_db: GatewayDb, probe_login: tuple[str, str]
) -> None:
    name, url = probe_login
    alter_login(gw_db, name, "bypassrls")
    with pytest.raises(UnsafeLogin, match=f"'{name}' has BYPASSRLS"):
        async with serve(create_app(settings_for(GatewayDb(gw_db.admin_url, url)))):
            pytest.fail("the gateway started with a BYPASSRLS login")


async def test_a_login_made_superuser_later_never_serves(
    gw_db: GatewayDb, probe_login: tuple[str, str], gateway_log: Records
) -> None:
    """Started while the login was fit (as it is while the database is down at startup): every new pooled
    connection is checked, and refused once the login became a superuser."""
    name, url = probe_login
    settings = settings_for(GatewayDb(gw_db.admin_url, url), pool_min=1, pool_max=2, pool_timeout=1.0)
    async with serve(create_app(settings)) as client:
        assert (await client.get("/health")).status_code == 200
        alter_login(gw_db, name, "superuser")
        pool = gateway_of(client).pool
        assert pool is not None
        await pool.drain()  # the connections made before are replaced: the new ones are checked
        with pytest.raises(PoolTimeout):
            async with pool.connection(timeout=1.0):
                pytest.fail("a pooled connection of a superuser login was handed out")
        health = await client.get("/health")
        assert (health.status_code, health.json()["status"]) == (503, "unavailable")
    assert any(f"'{name}' is a superuser" in m for m in gateway_log.messages), gateway_log.messages


async def test_the_payment_paths_refuse_a_superuser_login_too(
    gw_db: GatewayDb, probe_login: tuple[str, str]
) -> None:
    """The Stripe paths have no pool of their own: they run on the gateway's, whose connections of a login
    made superuser are refused."""
    name, url = probe_login
    settings = settings_for(GatewayDb(gw_db.admin_url, url), pool_min=1, pool_max=2, pool_timeout=1.0)
    service = PaymentService.from_env({"COMMERCECORE_DEMO": "1"})
    async with serve(create_app(settings, payments=service)) as client:
        pool = gateway_of(client).pool
        assert pool is not None
        assert service.store.pool is pool
        alter_login(gw_db, name, "superuser")
        await pool.drain()
        with pytest.raises(PoolTimeout):
            async with service.store.transaction():
                pytest.fail("the payment paths ran a transaction as a superuser")


def test_serve_refuses_a_superuser_login_with_one_line(gw_db: GatewayDb) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": gw_db.admin_url,
        "COMMERCECORE_JWT_SECRET": secrets.token_hex(32),
        "STRIPE_SECRET_KEY": "sk_test_" + secrets.token_hex(8),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
    }
    env.pop("COMMERCECORE_GATEWAY_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "commercecore.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "is a superuser" in lines[0]
    assert "'authenticator'" in lines[0]
