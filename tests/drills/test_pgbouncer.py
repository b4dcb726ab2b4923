"""PgBouncer in transaction pooling mode between the gateway and PostgreSQL.

A pgbouncer (the Debian package `pgbouncer`; `.ci/run` installs it) listens on a free loopback port with a
generated ini: SCRAM for clients, the authenticator's password in an auth_file, pool_mode = transaction, a
server pool smaller than the gateway's. The gateway runs through it as configured for production (no
server-side prepared statements: prepare_threshold=None) and serves the end-to-end scenarios of
tests/gateway/test_e2e.py, a whole shop session, and concurrent orders multiplexed over three server
connections.

LISTEN cannot work through transaction pooling: the LISTEN stays behind on a server connection that PgBouncer
hands to other clients between transactions, and a notification arriving there is dropped ("got packet 'A'
from server when not linked"). The schema listener connects where COMMERCECORE_LISTEN_URL says (PostgreSQL
itself); without it, the gateway finds out that NOTIFY does not reach it, says so, and reloads the schema
cache on a timer instead of never. The catalog cache's listener connects there too; without it, its probe
notification never arrives, it says so, and the catalog cache stays bypassed (reads go to the database).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from commercecore.local.embedded import free_port
from commercecore.standin import BackgroundServer
from gateway import app as gateway_app
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import PgServer
from tests.drills.conftest import (
    Customer,
    drill_settings,
    error_body,
    invariant_violations,
    new_customer,
    new_staff,
    running_gateway,
    wait_for,
)
from tests.gateway import test_e2e
from tests.gateway.conftest import GatewayDb, clone_database

SERVER_POOL_SIZE = 3  # server connections for the gateway's database and user: fewer than its pool


def bouncer_settings(database_url: str, **overrides: Any) -> Settings:
    """The gateway as configured behind PgBouncer in transaction mode: no named prepared statements, which
    a server connection keeps but the next transaction may not get (PgBouncer 1.21+ can track them with
    max_prepared_statements; Debian 12 ships 1.18)."""
    settings = drill_settings(database_url, **overrides)
    if any(f.name == "prepared_statements" for f in dataclasses.fields(Settings)):
        settings = dataclasses.replace(settings, prepared_statements=False)
    return settings


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)


@dataclass(frozen=True)
class Bouncer:
    port: int
    log: Path
    database: GatewayDb
    name: str

    @property
    def gateway_url(self) -> str:
        """The authenticator's URL through pgbouncer (the password is the same: pgbouncer relays SCRAM)."""
        parts = urlsplit(self.database.gateway_url)
        return parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{self.port}").geturl()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def run_pgbouncer(binary: str, directory: Path, database: GatewayDb, password: str) -> Iterator[Bouncer]:
    """pgbouncer on a free loopback port, as a child process in the foreground; stopped afterwards."""
    server = urlsplit(database.admin_url)
    name = server.path.lstrip("/")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    auth_file = directory / "userlist.txt"
    # a plain password: pgbouncer answers the client's SCRAM exchange and logs in to PostgreSQL with it
    auth_file.write_text(f'"authenticator" "{password}"\n')
    auth_file.chmod(0o600)
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
                "[databases]",
                f"{name} = host={server.hostname} port={server.port or 5432} dbname={name}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                f"auth_file = {auth_file}",
                "pool_mode = transaction",
                f"default_pool_size = {SERVER_POOL_SIZE}",
                "max_client_conn = 200",
                # no logfile, no pidfile: it logs to stderr (our file), it runs as another user as root
                "pidfile =",
                "",
            ]
        )
    )
    log = directory / "pgbouncer.log"
    command = [binary]
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root; it reads its config and auth_file before switching user
        command += ["-u", "nobody"]
    command.append(str(ini))
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=directory)
    try:
        wait_for(lambda: _accepts(port) or process.poll() is not None, "pgbouncer to listen", deadline=15)
        if process.poll() is not None:
            pytest.fail(f"pgbouncer exited with {process.returncode}: {log.read_text(errors='replace')}")
        yield Bouncer(port, log, database, name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture
def bouncer(pg: PgServer, template_db: str, gateway_password: str, tmp_path: Path) -> Iterator[Bouncer]:
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it)")
    # the e2e scenarios' database: the deployed plan plus tests/gateway's test objects and products
    name = f"cc_bouncer_{uuid.uuid4().hex[:8]}"
    database = clone_database(pg, template_db, gateway_password, name)
    try:
        with run_pgbouncer(binary, tmp_path / "pgbouncer", database, gateway_password) as running:
            yield running
    finally:
        pg.drop_db(name)


@contextlib.contextmanager
def gateway_logs() -> Iterator[list[logging.LogRecord]]:
    """The records of the gateway's own logger (it does not propagate to pytest's capture)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("commercecore.gateway")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def new_route_appears(database: GatewayDb, http: httpx.Client, name: str, deadline: float) -> None:
    """A deployment (DDL as the superuser, on PostgreSQL itself): the event trigger sends NOTIFY; the new
    function's declared route must be served within the deadline."""
    assert http.get(f"/rpc/{name}").status_code == 404
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(
            f"create function api.{name}() returns text language sql stable as $$ select 'new' $$;"
            f"comment on function api.{name}() is 'New.\n@route GET /drill/{name}';"
            f"grant execute on function api.{name}() to app_readonly"
        )
    wait_for(lambda: http.get(f"/drill/{name}").status_code == 200, f"GET /drill/{name}", deadline)
    assert http.get(f"/drill/{name}").json() == "new"


# -- the drills --------------------------------------------------------------------------------------------


def test_the_gateway_through_pgbouncer_in_transaction_mode(bouncer: Bouncer) -> None:
    # the documented setup: requests through pgbouncer, the schema listener on PostgreSQL itself
    settings = bouncer_settings(bouncer.gateway_url, pool_min=2, pool_max=8, pool_timeout=5.0)
    server = BackgroundServer(create_app(settings, listen_url=bouncer.database.gateway_url))
    with gateway_logs() as warnings, running_gateway(settings, server=server) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            assert http.get("/health").json()["status"] == "ok"
            # tests/gateway/test_e2e.py, as it is, against this gateway
            test_e2e.test_browser_session_over_real_http(base_url)
            test_e2e.test_postgrest_client(base_url)
            shop_session(bouncer, http)
            concurrent_orders(bouncer, http)
            new_route_appears(bouncer.database, http, "gw_bouncer_notified", deadline=15)
        assert not [r.getMessage() for r in warnings if "listener" in r.getMessage()]
    log = bouncer.log_text()
    # every request went through pgbouncer: it opened server connections and saw no protocol errors
    assert "new connection to server" in log, log[-2000:]
    assert " ERROR " not in log, log[-3000:]
    assert not invariant_violations(bouncer.database.admin_url)


def test_without_a_listen_url_the_gateway_says_so_and_polls(
    bouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(gateway_app.LISTEN_URL_ENV, raising=False)
    monkeypatch.setattr(gateway_app, "SCHEMA_POLL_INTERVAL", 0.5)
    settings = bouncer_settings(bouncer.gateway_url, pool_min=1, pool_max=4, pool_timeout=2.0)
    with (
        gateway_logs() as warnings,
        running_gateway(settings) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as http,
    ):
        wait_for(
            lambda: any("NOTIFY does not reach it" in r.getMessage() for r in warnings),
            "the gateway to notice that NOTIFY does not reach its listener",
            deadline=15,
        )
        message = next(r.getMessage() for r in warnings if "NOTIFY does not reach it" in r.getMessage())
        assert gateway_app.LISTEN_URL_ENV in message
        wait_for(
            lambda: any("catalog cache is bypassed" in r.getMessage() for r in warnings),
            "the catalog listener to notice that its probe does not arrive",
            deadline=15,
        )
        catalog = next(r.getMessage() for r in warnings if "catalog cache is bypassed" in r.getMessage())
        assert "NOTIFY does not reach the listener" in catalog
        assert gateway_app.LISTEN_URL_ENV in catalog
        for _ in range(2):  # bypassed: the reads are the database's, and right
            assert http.get("/categories").status_code == 200
        # the deployment reaches this gateway anyway, by the timer
        new_route_appears(bouncer.database, http, "gw_bouncer_polled", deadline=15)


# -- the scenarios -------------------------------------------------------------------------------------------


def shop_session(bouncer: Bouncer, http: httpx.Client) -> None:
    """Browse, sign up, order (idempotently), change and cancel the order, staff edits the catalog, a second
    customer is refused the first one's order, logout ends the session."""
    products = http.get("/products", params={"select": "id,sku,price_minor,stock", "order": "id", "limit": 3})
    assert products.status_code == 200
    first, second, _third = products.json()
    assert http.get(f"/products/{first['id']}").json()["sku"] == first["sku"]
    assert http.get("/categories").status_code == 200
    assert http.get("/rpc/search_products", params={"q": "shoe", "limit": 3}).status_code == 200

    alice = new_customer(http, "alice")
    key = str(uuid.uuid4())
    items = [{"product_id": first["id"], "quantity": 2}, {"product_id": second["id"], "quantity": 1}]
    created = http.post("/orders", json={"items": items}, headers={**alice.headers, "Idempotency-Key": key})
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["total_minor"] == 2 * first["price_minor"] + second["price_minor"]
    replay = http.post("/orders", json={"items": items}, headers={**alice.headers, "Idempotency-Key": key})
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == order["id"]
    reused = http.post(
        "/orders", json={"items": items[:1]}, headers={**alice.headers, "Idempotency-Key": key}
    )
    assert error_body(reused, 422)["details"]["code"] == "idempotency_key_reused"

    path = f"/orders/{order['id']}"
    changed = http.patch(f"{path}/items/{first['id']}", json={"quantity": 3}, headers=alice.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["total_minor"] == 3 * first["price_minor"] + second["price_minor"]
    removed = http.delete(f"{path}/items/{second['id']}", headers=alice.headers)
    assert [i["product_id"] for i in removed.json()["items"]] == [first["id"]]

    bob = new_customer(http, "bob")
    assert error_body(http.get(path, headers=bob.headers), 404)
    assert error_body(http.post(f"{path}/cancel", headers=bob.headers), 404)
    assert http.get("/orders", headers=bob.headers).json() == []

    cancelled = http.post(f"{path}/cancel", headers=alice.headers)
    assert cancelled.json()["status"] == "cancelled"
    assert http.get(f"/products/{first['id']}").json()["stock"] == first["stock"]

    staff = new_staff(http, bouncer.database.admin_url)
    sku = f"PGB-{uuid.uuid4().hex[:8]}"
    made = http.post(
        "/products", json={"sku": sku, "name": "Bouncer mug", "price_minor": 1500}, headers=staff.headers
    )
    assert made.status_code == 201, made.text
    product_id = made.json()["id"]
    assert (
        http.patch(f"/products/{product_id}", json={"price_minor": 1400}, headers=staff.headers).json()[
            "price_minor"
        ]
        == 1400
    )
    stocked = http.post(
        f"/products/{product_id}/stock", json={"delta": 5, "reason": "restock"}, headers=staff.headers
    )
    assert stocked.json()["stock"] == 5
    assert error_body(
        http.post("/products", json={"sku": sku, "name": "x", "price_minor": 1}, headers=alice.headers), 403
    )

    assert http.post("/auth/logout", headers=alice.headers).status_code == 204
    assert http.get("/me", headers=alice.headers).status_code == 401


def concurrent_orders(bouncer: Bouncer, http: httpx.Client) -> None:
    """Eight customers order at once: the gateway's eight connections share three server connections."""
    product = http.get("/products", params={"select": "id,stock", "order": "id", "offset": 5, "limit": 1})
    product_id, stock = product.json()[0]["id"], product.json()[0]["stock"]
    customers = [new_customer(http, "crowd") for _ in range(8)]
    statuses: list[int] = []
    lock = threading.Lock()

    def buy(customer: Customer) -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=30) as own:
            for _ in range(3):
                response = own.post(
                    "/orders",
                    json={"items": [{"product_id": product_id, "quantity": 1}]},
                    headers=customer.headers,
                )
                with lock:
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=buy, args=(c,)) for c in customers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == 24
    sold = statuses.count(201)
    assert set(statuses) <= {201, 409}, statuses
    assert sold == min(24, stock)  # no oversell, no lost order
    assert http.get(f"/products/{product_id}").json()["stock"] == stock - sold
