"""Fault drills: a real gateway (uvicorn on 127.0.0.1, in a thread) under a PostgreSQL crash, a webhook storm,
an exhausted pool and slow statements, and behind PgBouncer.

Each drill has a database of its own: a clone of the deployed template on the session's server, or (the crash
drill) a cluster of its own with fsync on. Waits are bounded: Events, and polls with a deadline, never a sleep
that stands in for synchronisation. The checks that end each drill are about the data (the invariants below),
not about timings, except where a bound is the point (a request never hangs past its pool timeout).
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from commercecore.standin import BackgroundServer
from gateway.app import create_app
from gateway.payments import PaymentService
from gateway.settings import RATES_OFF, Settings
from tests.conftest import PgServer, login_url

DRILL_JWT_SECRET = "drill-" + secrets.token_urlsafe(40)
PASSWORD = "correct horse battery"
ERROR_KEYS = {"code", "message", "details", "hint"}


def drill_settings(database_url: str, **overrides: Any) -> Settings:
    """Gateway settings for a drill: cheap password hashes (the drills are about faults, not argon2)."""
    base = Settings(
        database_url=database_url,
        jwt_secret=DRILL_JWT_SECRET,
        cookie_secure=False,
        pool_min=1,
        pool_max=4,
        pool_timeout=2.0,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        # budgets off: many tests sign in many times from one address; tests/gateway/test_throttles.py
        # turns them on one by one
        rate_limits=RATES_OFF,
    )
    return replace(base, **overrides)


@contextlib.contextmanager
def running_gateway(
    settings: Settings, *, payments: PaymentService | bool = False, server: BackgroundServer | None = None
) -> Iterator[str]:
    """The gateway under uvicorn on a free loopback port (lifespan included); its base URL.

    `server`: a BackgroundServer already bound around `create_app(...)` (when its URL is needed before it
    starts, e.g. for the stand-in's webhook endpoint)."""
    if server is None:
        server = BackgroundServer(create_app(settings, payments=payments))
    server.start(timeout=30)
    try:
        yield server.url
    finally:
        server.stop(timeout=30)


def wait_for(check: Callable[[], bool], what: str, deadline: float = 30.0, interval: float = 0.05) -> float:
    """Polls `check` until it is true; fails the test after `deadline` seconds. Returns the time it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > deadline:
            pytest.fail(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error shape {code, message, details, hint} (docs/http-api.md section 4) with this status; the
    body."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["code"], str), body
    assert body["code"], body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    assert response.headers.get("x-request-id"), response.headers
    return body


def unavailable_body(response: httpx.Response) -> dict[str, Any]:
    """A 503 as clients and load balancers need it: the error shape and a Retry-After in seconds."""
    body = error_body(response, 503)
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit(), response.headers
    assert int(retry_after) >= 1, response.headers
    return body


# -- the database --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillDb:
    name: str
    admin_url: str  # superuser: arranging and checking
    gateway_url: str  # authenticator: what the gateway uses

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return query_rows(self.admin_url, query, params)

    def value(self, query: str, params: Any = None) -> Any:
        found = self.rows(query, params)
        assert found, f"no row from {query}"
        return found[0][0]


def query_rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


@pytest.fixture
def gateway_password(pg: PgServer, template_db: str) -> Iterator[str]:
    """A password for the authenticator during one drill; the previous one (its SCRAM verifier) is put back
    afterwards. Roles are cluster-wide and other suites' session fixtures keep the password they set, so a
    drill must leave it as it found it."""
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        row = conn.execute(
            "select rolpassword from pg_catalog.pg_authid where rolname = 'authenticator'"
        ).fetchone()
        assert row is not None, "the plan creates the authenticator role"
        previous: str | None = row[0]
        password = secrets.token_urlsafe(24)
        conn.execute(sql.SQL("alter role authenticator password {}").format(sql.Literal(password)))
    try:
        yield password
    finally:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            # a SCRAM verifier given as the password is stored as it is
            conn.execute(
                sql.SQL("alter role authenticator password {}").format(
                    sql.Literal(previous) if previous is not None else sql.SQL("null")
                )
            )


@pytest.fixture
def drill_db(pg: PgServer, template_db: str, gateway_password: str) -> Iterator[DrillDb]:
    """A committed clone of the deployed template for one drill; dropped after."""
    name = f"cc_drill_{uuid.uuid4().hex[:8]}"
    url = pg.create_db(name, template=template_db)
    yield DrillDb(name, url, login_url(url, "authenticator", gateway_password))
    pg.drop_db(name)


# -- customers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    id: int
    email: str
    headers: dict[str, str]  # Authorization: Bearer ...


def new_customer(http: httpx.Client, prefix: str = "drill") -> Customer:
    """Signs a customer up and returns a Bearer token for them (API clients need no CSRF token)."""
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=str(http.base_url), timeout=30.0) as fresh:  # its own cookie jar
        signup = fresh.post("/auth/signup", json={"email": email, "password": PASSWORD, "full_name": "Drill"})
        assert signup.status_code == 201, signup.text
        token = fresh.post("/auth/token", json={"email": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
    return Customer(
        int(signup.json()["id"]), email, {"Authorization": f"Bearer {token.json()['access_token']}"}
    )


def new_staff(http: httpx.Client, admin_url: str) -> Customer:
    """A customer promoted to staff (app_admin) in the database, signed in again: the role is in the token."""
    person = new_customer(http, "staff")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("update core.users set role = 'app_admin' where id = %s", [person.id])
    token = http.post("/auth/token", json={"email": person.email, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return Customer(person.id, person.email, {"Authorization": f"Bearer {token.json()['access_token']}"})


# -- invariants ------------------------------------------------------------------------------------------

INVARIANTS: dict[str, str] = {
    # an order is created with its items in one transaction; only the API empties one on purpose
    "orders without items": """
        select o.id from core.orders as o
        where not exists (select from core.order_items as i where i.order_id = o.id)
        order by o.id
    """,
    "payments without an order": """
        select p.id from core.payments as p
        where not exists (select from core.orders as o where o.id = p.order_id)
        order by p.id
    """,
    "products whose stock is not their ledger sum": """
        select p.id, p.stock, coalesce(sum(m.delta), 0) as ledger
        from core.products as p
        left join core.inventory_movements as m on m.product_id = p.id
        group by p.id, p.stock
        having p.stock <> coalesce(sum(m.delta), 0)
        order by p.id
    """,
    # per order and product, the ledger took out exactly what the order holds (nothing once cancelled)
    "orders whose ledger does not match their items": """
        with moved as (
          select order_id, product_id, -sum(delta) as taken
          from core.inventory_movements
          where order_id is not null
          group by order_id, product_id
        ), held as (
          select i.order_id, i.product_id, case when o.status = 'cancelled' then 0 else i.quantity end as held
          from core.order_items as i
          join core.orders as o on o.id = i.order_id
        )
        select coalesce(m.order_id, h.order_id), coalesce(m.product_id, h.product_id), m.taken, h.held
        from moved as m
        full join held as h on h.order_id = m.order_id and h.product_id = m.product_id
        where coalesce(m.taken, 0) <> coalesce(h.held, 0)
        order by 1, 2
    """,
    "orders whose total is not the sum of their items": """
        select o.id, o.total_minor, coalesce(sum(i.quantity * i.unit_price_minor), 0)
        from core.orders as o
        left join core.order_items as i on i.order_id = o.id
        group by o.id, o.total_minor
        having o.total_minor <> coalesce(sum(i.quantity * i.unit_price_minor), 0)
        order by o.id
    """,
    "paid orders without the succeeded payment that paid them": """
        select o.id from core.orders as o
        where o.status in ('paid', 'refunded')
          and not exists (
            select from core.payments as p
            where p.order_id = o.id and p.applied and p.status in ('succeeded', 'refunded')
          )
        order by o.id
    """,
}


def invariant_violations(admin_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every invariant that does not hold, with the offending rows (empty: all hold)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name, query in INVARIANTS.items():
            rows = conn.execute(query).fetchall()
            if rows:
                found[name] = rows[:20]
    return found


def order_lines(admin_url: str, order_ids: list[int]) -> dict[int, dict[int, int]]:
    """{order id: {product id: quantity}} for the orders that exist."""
    lines: dict[int, dict[int, int]] = {}
    rows = query_rows(
        admin_url,
        "select o.id, i.product_id, i.quantity from core.orders as o"
        " left join core.order_items as i on i.order_id = o.id where o.id = any(%s)",
        [order_ids],
    )
    for order_id, product_id, quantity in rows:
        items = lines.setdefault(int(order_id), {})
        if product_id is not None:
            items[int(product_id)] = int(quantity)
    return lines
