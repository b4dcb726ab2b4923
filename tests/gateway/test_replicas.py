"""Streaming read replicas in the gateway, against the session's PostgreSQL and a real streaming replica of
it (the `replica` fixture: commercecore.local.replica, as `commercecore pg replica start` makes one).

Which server answered is read from the routing counter, commercecore_db_routed_total{target, reason}: a
client's sequential requests on an app of its own move it by one each (read from /metrics, and parsed as
`commercecore dba health --gateway` parses it). Waits are polls with a deadline, never a sleep in their
place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from commercecore.local.replica import Replica
from commercecore.ops import reports
from gateway.app import Gateway, create_app
from gateway.replicas import LSN_HEADER, parse_lsn
from gateway.settings import ReplicaSettings, Settings
from tests.conftest import PgServer, primary_lsn, replayed
from tests.drills.test_crash import kill_postgres, reaped
from tests.drills.test_pgbouncer import pgbouncer_binary, run_pgbouncer
from tests.gateway.conftest import (
    GatewayDb,
    bearer,
    clone_database,
    csrf,
    gateway_of,
    make_admin,
    serve,
    settings_for,
    signup,
)

pytestmark = pytest.mark.anyio

PRIMARY = "primary"
Route = tuple[str, str]  # (target, reason)


@pytest.fixture(scope="module")
def replica_db(
    pg: PgServer, template_db: str, authenticator_password: str, replica: Replica
) -> Iterator[GatewayDb]:
    """This module's clone of the deployed template, once the replica has it too."""
    name = f"cc_gwr_{uuid.uuid4().hex[:8]}"
    database = clone_database(pg, template_db, authenticator_password, name)
    replayed(replica, primary_lsn(pg.url()))
    yield database
    pg.drop_db(name)


def replica_settings(
    database: GatewayDb, replica: Replica, password: str, *, max_lag: float, **overrides: Any
) -> Settings:
    dbname = database.admin_url.rsplit("/", 1)[1]
    url = replica.cluster.url(dbname, user="authenticator", password=password)
    replicas = ReplicaSettings(urls=(url,), wait=0.1, max_lag=max_lag, check_interval=0.05, pool_max=4)
    return settings_for(database, replicas=replicas, **overrides)


async def routing(http: httpx.AsyncClient) -> Counter[Route]:
    """The routing counts, from /metrics."""
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    rows = reports.gateway_routing(metrics.text)
    return Counter({(row["target"], row["reason"]): row["requests"] for row in rows if "requests" in row})


async def routed(
    http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, Route]:
    """A request and the one (target, reason) it moved."""
    before = await routing(http)
    response = await http.request(method, url, **kwargs)
    moved = await routing(http) - before
    assert sum(moved.values()) == 1, (url, response.status_code, moved)
    return response, next(iter(moved))


async def eventually(check: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    until = time.monotonic() + deadline
    while not check():
        if time.monotonic() > until:
            pytest.fail(f"timed out after {deadline:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def in_use(gateway: Gateway) -> bool:
    assert gateway.replicas is not None
    return all(replica.healthy for replica in gateway.replicas.replicas)


@contextlib.contextmanager
def replay_paused(replica: Replica) -> Iterator[None]:
    """Replay stopped on the replica (it still receives WAL) until the block ends."""
    with psycopg.connect(replica.cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("select pg_wal_replay_pause()")
        until = time.monotonic() + 30
        while conn.execute("select pg_get_wal_replay_pause_state()").fetchone() != ("paused",):
            assert time.monotonic() < until, "replay did not pause"
            time.sleep(0.01)
        try:
            yield
        finally:
            conn.execute("select pg_wal_replay_resume()")


@contextlib.asynccontextmanager
async def other_client(http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """Another client of the same app, with cookies of its own (a browser)."""
    async with httpx.AsyncClient(transport=http._transport, base_url="http://gateway.test") as other:
        yield other


async def customer(http: httpx.AsyncClient, *, staff: GatewayDb | None = None) -> dict[str, str]:
    """A new customer's (with `staff`: a staff member's) bearer token; signed up on another client, so that
    `http` stays anonymous."""
    async with other_client(http) as browser:
        user = await signup(browser)
        if staff is not None:
            make_admin(staff, user["id"])
        return await bearer(browser, user["email"])


async def a_product(http: httpx.AsyncClient) -> int:
    products = await http.get("/products?limit=1")
    assert products.status_code == 200, products.text
    return int(products.json()[0]["id"])


async def test_read_your_writes_while_replay_is_paused(
    pg: PgServer, replica: Replica, replica_db: GatewayDb, authenticator_password: str
) -> None:
    settings = replica_settings(replica_db, replica, authenticator_password, max_lag=2.0)
    async with serve(create_app(settings)) as http, other_client(http) as browser:
        gateway = gateway_of(http)
        assert gateway.replicas is not None
        label = gateway.replicas.replicas[0].label
        token = await customer(http)
        await signup(browser)
        product = await a_product(http)
        await eventually(lambda: in_use(gateway), "the replica in use")
        # the customers' sessions are on the replica: only the commit position keeps their reads off it
        replayed(replica, primary_lsn(pg.url()))
        with replay_paused(replica):
            anonymous = [(await routed(http, "GET", "/products?limit=5"))[1]]
            await cookie_session_reads_its_write(http, browser, product)
            created, route = await routed(
                http,
                "POST",
                "/orders",
                json={"items": [{"product_id": product, "quantity": 1}]},
                headers=token,
            )
            assert created.status_code == 201, created.text
            assert route == (PRIMARY, "write")
            order_id = created.json()["id"]
            carried = {**token, LSN_HEADER: created.headers[LSN_HEADER]}
            parse_lsn(created.headers[LSN_HEADER])
            for _ in range(50):
                one, route = await routed(http, "GET", f"/orders/{order_id}", headers=carried)
                assert one.status_code == 200, one.text
                assert one.json()["id"] == order_id
                assert route in {(PRIMARY, "behind"), (PRIMARY, "lagging")}
                listed, route = await routed(http, "GET", "/orders", headers=carried)
                assert order_id in [row["id"] for row in listed.json()]
                assert route[0] == PRIMARY, route
                anonymous.append((await routed(http, "GET", "/products?limit=5"))[1])
            until = time.monotonic() + 30
            while anonymous[-1][0] != PRIMARY:
                assert time.monotonic() < until, "the replica's lag never passed the bound"
                anonymous.append((await routed(http, "GET", "/products?limit=5"))[1])
            anonymous += [(await routed(http, "GET", "/products?limit=5"))[1] for _ in range(3)]
            switch = [target for target, _reason in anonymous].index(PRIMARY)
            # served by the replica until its lag passed the bound, by the primary from then on
            assert switch >= 1
            assert set(anonymous[:switch]) == {(label, "read")}
            assert set(anonymous[switch:]) == {(PRIMARY, "lagging")}
        # replay resumed: the replica catches up and serves again
        await eventually(lambda: in_use(gateway), "the replica back in use")
        assert (await routed(http, "GET", "/products?limit=5"))[1] == (label, "read")


async def cookie_session_reads_its_write(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, product: int
) -> None:
    """A browser's write sets its commit position as a short-lived HttpOnly cookie; its next read sends it
    back and sees the write: from the primary, since the (healthy) replica has not replayed it."""
    created = await browser.post(
        "/orders", json={"items": [{"product_id": product, "quantity": 1}]}, headers=csrf(browser)
    )
    assert created.status_code == 201, created.text
    cookie = next(c for c in created.headers.get_list("set-cookie") if c.startswith("cc_lsn="))
    assert cookie.split(";")[0] == f"cc_lsn={created.headers[LSN_HEADER]}"
    assert {"HttpOnly", "SameSite=Lax", "Max-Age=4", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    before = await routing(http)
    read = await browser.get(f"/orders/{created.json()['id']}")
    assert read.status_code == 200, read.text
    assert await routing(http) - before == Counter({(PRIMARY, "behind"): 1})


async def test_commit_positions_from_clients_are_checked(
    replica: Replica, replica_db: GatewayDb, authenticator_password: str
) -> None:
    settings = replica_settings(replica_db, replica, authenticator_password, max_lag=30)
    async with serve(create_app(settings)) as http:
        gateway = gateway_of(http)
        await eventually(lambda: in_use(gateway), "the replica in use")
        for garbage in ("nonsense", "1/2/3", "0/FFFFFFFFF", "G/0", "", "0/" + "1" * 600):
            refused = await http.get("/products", headers={LSN_HEADER: garbage})
            assert refused.status_code == 400, (garbage, refused.text)
            assert refused.json()["details"]["code"] == "invalid_lsn"
        planted = await http.get("/products", headers={"Cookie": "cc_lsn=not-a-position"})
        assert planted.status_code == 400, planted.text
        assert planted.headers["set-cookie"].startswith("cc_lsn=;")
        # a position the replica has not reached: the primary answers, after the bounded wait
        ahead, route = await routed(http, "GET", "/products?limit=1", headers={LSN_HEADER: "FFFFFFFF/0"})
        assert ahead.status_code == 200
        assert route == (PRIMARY, "behind")
        # staff read what they change: the primary
        admin = await customer(http, staff=replica_db)
        assert (await routed(http, "GET", "/products?limit=1", headers=admin))[1] == (PRIMARY, "staff")


def test_dba_health_shows_the_replica_and_its_lag(pg: PgServer, replica: Replica) -> None:
    with reports.open_connection(pg.url()) as conn:
        rows = reports.replication(conn)
        health = reports.health(conn)
    mine = [row for row in rows if row["name"] == replica.slot]
    assert len(mine) == 1, rows
    assert mine[0]["state"] == "streaming"
    assert mine[0]["slot"] == replica.slot
    assert mine[0]["lag_bytes"] >= 0
    check = next(check for check in health.checks if check.name == "replication")
    assert replica.slot in check.detail
    assert [row["name"] for row in health.replicas] == [row["name"] for row in rows]


async def test_read_your_writes_behind_pgbouncer(
    replica: Replica, replica_db: GatewayDb, authenticator_password: str, tmp_path: Path
) -> None:
    """The primary through PgBouncer in transaction pooling: a write's commit position, read in the batch
    of its COMMIT, is one the replica shows the write at."""
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it)")
    with run_pgbouncer(binary, tmp_path / "pgbouncer", replica_db, authenticator_password) as bouncer:
        settings = replica_settings(
            replica_db,
            replica,
            authenticator_password,
            max_lag=30,
            database_url=bouncer.gateway_url,
            prepared_statements=False,
        )
        async with serve(create_app(settings, listen_url=replica_db.gateway_url)) as http:
            gateway = gateway_of(http)
            assert gateway.replicas is not None
            label = gateway.replicas.replicas[0].label
            token = await customer(http)
            product = await a_product(http)
            await eventually(lambda: in_use(gateway), "the replica in use")
            with replay_paused(replica):
                created = await http.post(
                    "/orders", json={"items": [{"product_id": product, "quantity": 1}]}, headers=token
                )
                assert created.status_code == 201, created.text
                carried = {**token, LSN_HEADER: created.headers[LSN_HEADER]}
                path = f"/orders/{created.json()['id']}"
                read, route = await routed(http, "GET", path, headers=carried)
                assert (read.status_code, route) == (200, (PRIMARY, "behind"))
            until = time.monotonic() + 30
            while route != (label, "caught_up"):
                assert time.monotonic() < until, route
                read, route = await routed(http, "GET", path, headers=carried)
                assert read.status_code == 200, read.text


@dataclass
class ReadLoad:
    """Clients reading in a loop (the catalog anonymously, their orders as a customer), with every status."""

    http: httpx.AsyncClient
    customer: dict[str, str]
    statuses: list[int] = field(default_factory=list)
    in_flight: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, number: int) -> None:
        while not self.stop.is_set():
            self.in_flight += 1
            try:
                if number % 2:
                    response = await self.http.get("/products?limit=5")
                else:
                    response = await self.http.get("/orders", headers=self.customer)
            finally:
                self.in_flight -= 1
            self.statuses.append(response.status_code)


def served(gateway: Gateway, target: str) -> float:
    """Requests the gateway has routed to `target` ("primary" or a replica's label), read in-process."""
    assert gateway.replicas is not None
    return sum(
        sample.value
        for metric in gateway.replicas.metrics.routed.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["target"] == target
    )


async def test_a_replica_killed_under_read_load_then_restarted(
    replica: Replica, replica_db: GatewayDb, authenticator_password: str
) -> None:
    settings = replica_settings(replica_db, replica, authenticator_password, max_lag=30, pool_timeout=2.0)
    async with serve(create_app(settings)) as http:
        gateway = gateway_of(http)
        assert gateway.replicas is not None
        label = gateway.replicas.replicas[0].label
        load = ReadLoad(http, await customer(http))
        await eventually(lambda: in_use(gateway), "the replica in use")
        clients = [asyncio.create_task(load.client(number)) for number in range(4)]
        try:
            await eventually(lambda: served(gateway, label) >= 20, "reads served by the replica")
            in_flight = load.in_flight
            killed = kill_postgres(replica.cluster)
            on_primary = served(gateway, PRIMARY)
            await eventually(lambda: served(gateway, PRIMARY) >= on_primary + 20, "reads on the primary")
            await eventually(lambda: reaped(killed), "the killed replica's processes to be reaped")
            await asyncio.to_thread(replica.cluster.start)
            on_replica = served(gateway, label)
            await eventually(lambda: served(gateway, label) >= on_replica + 20, "the replica used again", 60)
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
    # the reads in flight at the kill lost their connection and ran again on the primary: not even they
    # failed (the bound allows as many 5xx as there were: `in_flight`)
    assert in_flight >= 1
    assert Counter(load.statuses) == Counter({200: len(load.statuses)}), (in_flight, Counter(load.statuses))
