"""Payments tests: the real Stripe SDK against the stand-in (uvicorn on 127.0.0.1 in a thread), and a tiny
Starlette app serving `payment_routes()` (uvicorn, another thread) against a committed clone of the deployed
database, connected as the `authenticator` like the gateway. The stand-in delivers its signed events to that
app; `Shop.flush()` waits until every queued delivery was answered (the webhook commits before it answers),
so tests synchronise on deliveries, never on sleeps.

The service runs on the app's event loop, with a pool of its own made as the gateway's
(gateway.payments.store.own_store): `Servers.run` runs a coroutine there. The tests' own calls to the
stand-in go through a synchronous client (`Shop.stripe`).

The caller's identity is what the gateway will put on `request.state.auth`: here a test middleware reads it
from X-Test-Role / X-Test-Sub headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import stripe
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from commercecore.standin import BackgroundServer, StandinState, start_standin
from commercecore.standin.state import account_of
from gateway import db as gwdb
from gateway.payments import PaymentService, PaymentSettings
from gateway.payments.routes import payment_routes
from gateway.payments.store import own_store
from tests.conftest import login_url, stripe_client

T = TypeVar("T")


# each test has its own API key, so its own "account" at the stand-in, as at Stripe: its own sessions,
# events and webhook endpoint, whatever other tests (whose fresh databases number payments from 1 too) do
def new_api_key() -> str:
    return f"sk_test_{uuid.uuid4().hex}"


WEBHOOK_SECRET = "whsec_" + uuid.uuid4().hex
PUBLIC_BASE_URL = "http://shop.test"
DEADLINE = 15.0


@dataclass(frozen=True)
class Caller:
    """What the gateway puts on request.state.auth (db.Identity has the same two fields)."""

    role: str
    claims: dict[str, Any]


class FakeAuth:
    """The gateway's authentication, reduced to two headers (the gateway's own is tested with the gateway)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            role = headers.get("x-test-role")
            if role:
                claims: dict[str, Any] = {"role": role}
                if headers.get("x-test-sub"):
                    claims["sub"] = headers["x-test-sub"]
                scope.setdefault("state", {})["auth"] = Caller(role, claims)
        await self.app(scope, receive, send)


@dataclass
class Servers:
    standin: BackgroundServer
    state: StandinState
    app: Starlette
    app_server: BackgroundServer

    @property
    def webhook_url(self) -> str:
        return f"{self.app_server.url}/webhooks/stripe"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the app's event loop (where the service's pool and client live)."""
        loop: asyncio.AbstractEventLoop = self.app.state.loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)


@contextlib.asynccontextmanager
async def remember_loop(app: Starlette) -> AsyncIterator[None]:
    app.state.loop = asyncio.get_running_loop()
    yield


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    standin, state = start_standin(webhook_secret=WEBHOOK_SECRET)
    app = Starlette(routes=payment_routes(), lifespan=remember_loop)
    app.state.payments = None
    app_server = BackgroundServer(FakeAuth(app)).start()
    try:
        yield Servers(standin, state, app, app_server)
    finally:
        app_server.stop()
        standin.stop()


def settings_for(servers: Servers, api_key: str, **overrides: Any) -> PaymentSettings:
    values: dict[str, Any] = {
        "secret_key": api_key,
        "webhook_secret": WEBHOOK_SECRET,
        "api_base": servers.standin.url,
        "public_base_url": PUBLIC_BASE_URL,
        "max_network_retries": 2,
        "timeout": 10.0,
    }
    values.update(overrides)
    return PaymentSettings(**values)


class Shop:
    """One test's world: the database (as superuser for arranging and checking), the payment app over HTTP,
    the stand-in's controls."""

    def __init__(
        self,
        servers: Servers,
        admin_url: str,
        gateway_url: str,
        service: PaymentService,
        client: stripe.StripeClient,
    ) -> None:
        self.servers = servers
        self.admin_url = admin_url
        self.gateway_url = gateway_url
        self.service = service
        # the tests' own calls to the stand-in, as the Stripe dashboard would make them
        self.stripe = client
        self.http = httpx.Client(base_url=servers.app_server.url, timeout=30.0)
        self.standin = httpx.Client(base_url=servers.standin.url, timeout=30.0)

    def close(self) -> None:
        self.http.close()
        self.standin.close()

    # -- the database -------------------------------------------------------------------------------

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def value(self, query: str, params: Any = None) -> Any:
        rows = self.sql(query, params)
        assert rows, f"no row from {query}"
        return rows[0][0]

    def customer(self, role: str = "app_readwrite") -> int:
        email = f"c{uuid.uuid4().hex[:12]}@example.com"
        return int(
            self.value(
                "insert into core.users (email, full_name, role) values (%s, 'Test', %s) returning id",
                [email, role],
            )
        )

    def staff(self) -> int:
        return self.customer("app_admin")

    def product(self, price_minor: int = 1250, stock: int = 50, currency: str = "EUR") -> int:
        sku = f"P-{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute(
                "insert into core.products (sku, name, price_minor, currency)"
                " values (%s, %s, %s, %s) returning id",
                [sku, f"Product {sku}", price_minor, currency],
            ).fetchone()
            assert row is not None
            conn.execute(
                "insert into core.inventory_movements (product_id, delta, reason) values (%s, %s, 'restock')",
                [row[0], stock],
            )
            return int(row[0])

    def as_customer(self, user_id: int, query: str, params: list[Any], role: str = "app_readwrite") -> Any:
        """One call as a request of this user would make it (role + claims), committed."""
        with psycopg.connect(self.admin_url) as conn, conn.transaction():
            settings = gwdb.parse_role_settings(conn.execute(gwdb.ROLE_SETTINGS_QUERY).fetchall())
            context, context_params = gwdb.request_context(
                role, {"sub": str(user_id), "role": role}, settings
            )
            conn.execute(context, context_params)
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def as_payments(self, user_id: int, query: str, params: list[Any]) -> Any:
        """One call as the Stripe paths make it (app_payments with the customer's claims), committed."""

        async def call() -> Any:
            claims = {"sub": str(user_id), "role": "app_readwrite"}
            async with self.service.store.transaction(claims=claims) as tx:
                return await tx.one(query, params)

        return self.servers.run(call())

    def order(self, user_id: int, lines: list[tuple[int, int]]) -> int:
        """api.create_order as the customer: stock and totals from the database, as in production."""
        items = json.dumps([{"product_id": p, "quantity": q} for p, q in lines])
        document = self.as_customer(user_id, "select api.create_order(%s::jsonb)", [items])
        return int(document["id"])

    def cancel(self, user_id: int, order_id: int) -> None:
        self.as_customer(user_id, "select api.cancel_order(%s)", [order_id])

    def order_row(self, order_id: int) -> dict[str, Any]:
        rows = self.sql(
            "select status, total_minor, refunded_minor, currency from core.orders where id = %s", [order_id]
        )
        status, total, refunded, currency = rows[0]
        return {"status": status, "total_minor": total, "refunded_minor": refunded, "currency": currency}

    def payments(self, order_id: int) -> list[dict[str, Any]]:
        rows = self.sql(
            "select id, attempt, status, amount_minor, applied, refund_required, refund_reason,"
            " refunded_minor, checkout_session_id, payment_intent_id, failure_reason from core.payments"
            " where order_id = %s order by attempt",
            [order_id],
        )
        keys = [
            "id", "attempt", "status", "amount_minor", "applied", "refund_required", "refund_reason",
            "refunded_minor", "checkout_session_id", "payment_intent_id", "failure_reason",
        ]  # fmt: skip
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def refunds(self, payment_id: int) -> list[dict[str, Any]]:
        rows = self.sql(
            "select id, amount_minor, status, reason, stripe_refund_id, idempotency_key from core.refunds"
            " where payment_id = %s order by id",
            [payment_id],
        )
        keys = ["id", "amount_minor", "status", "reason", "stripe_refund_id", "idempotency_key"]
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def inbox(self) -> list[dict[str, Any]]:
        rows = self.sql(
            "select id, type, outcome, payment_id, processed_at from core.stripe_events order by received_at"
        )
        keys = ["id", "type", "outcome", "payment_id", "processed_at"]
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def transitions(self, table: str, row_id: int) -> list[tuple[str | None, str | None]]:
        """The status changes the audit log recorded for one row, in order."""
        rows = self.sql(
            "select old_row ->> 'status', new_row ->> 'status' from audit.log"
            " where table_name = %s and row_id = %s and operation = 'UPDATE'"
            " and (old_row ->> 'status') is distinct from (new_row ->> 'status') order by id",
            [table, str(row_id)],
        )
        return [(old, new) for old, new in rows]

    @staticmethod
    def wait(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
        """Polls the database with a deadline (for what happens after an HTTP answer)."""
        end = time.monotonic() + deadline
        while not check():
            if time.monotonic() > end:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.02)

    # -- the payment routes ---------------------------------------------------------------------------

    def checkout(self, order_id: int, user_id: int | None, role: str = "app_readwrite") -> httpx.Response:
        headers = {"X-Test-Role": role}
        if user_id is not None:
            headers["X-Test-Sub"] = str(user_id)
        return self.http.post(f"/orders/{order_id}/checkout", headers=headers)

    def start(self, order_id: int, user_id: int) -> dict[str, Any]:
        """A successful checkout: the response body plus the session id."""
        response = self.checkout(order_id, user_id)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        body["session_id"] = body["checkout_url"].rsplit("/", 1)[-1]
        return body

    def refund(
        self, order_id: int, staff_id: int, amount: int | None = None, *, idempotency_key: str | None = None
    ) -> httpx.Response:
        body = {} if amount is None else {"amount": amount}
        headers = {"X-Test-Role": "app_admin", "X-Test-Sub": str(staff_id)}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self.http.post(f"/orders/{order_id}/refund", json=body, headers=headers)

    # -- the stand-in's controls --------------------------------------------------------------------------

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.standin.post(f"/_standin/{path}", json=body or {})
        assert response.status_code == 200, response.text
        return response.json()

    def complete(self, session_id: str, *, delayed: bool = False) -> Any:
        return self.control(f"sessions/{session_id}/complete", {"async": delayed})

    def flush(self) -> None:
        """Every queued event delivered and answered."""
        self.control("flush", {"timeout": DEADLINE})

    @property
    def account(self) -> str:
        return account_of(self.service.settings.secret_key)

    def delivery(self, enabled: bool) -> None:
        """Turns this test's webhook endpoint on or off."""
        self.control("delivery", {"account": self.account, "enabled": enabled})

    def fail_next(self, count: int, **scripted: Any) -> None:
        self.control("fail_next", {"count": count, **scripted})

    def events(self, *related: str, kind: str | None = None) -> list[dict[str, Any]]:
        params: list[tuple[str, str]] = [("related", r) for r in related]
        params.append(("account", self.account))
        if kind:
            params.append(("type", kind))
        response = self.standin.get("/_standin/events", params=params)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["data"]
        return events

    def event_marker(self) -> set[str]:
        """The ids of every event so far: `new_events(marker)` lists the later ones, oldest first."""
        return {e["id"] for e in self.events()}

    def new_events(self, marker: set[str]) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["id"] not in marker]

    def deliver(self, event_ids: list[str], *, parallel: bool = False) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.control("deliver", {"events": event_ids, "parallel": parallel})[
            "results"
        ]
        return results

    def standin_requests(self, path: str) -> list[dict[str, Any]]:
        """This test's API requests to `path` (its own account), oldest first."""
        response = self.standin.get("/_standin/requests", params={"path": path, "account": self.account})
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest.fixture
def shop(servers: Servers, fresh_db: str, authenticator_password: str) -> Iterator[Shop]:
    gateway_url = login_url(fresh_db, "authenticator", authenticator_password)
    api_key = new_api_key()
    service = PaymentService(settings_for(servers, api_key))
    resources = contextlib.AsyncExitStack()
    service.bind(
        servers.run(resources.enter_async_context(own_store(gateway_url, max_size=12, timeout=10.0)))
    )
    servers.app.state.payments = service
    try:
        with stripe_client(api_key, servers.standin.url, retries=2) as client:
            world = Shop(servers, fresh_db, gateway_url, service, client)
            # the test's own account has its own webhook endpoint, as at Stripe
            world.control("delivery", {"account": world.account, "enabled": True, "url": servers.webhook_url})
            world.control("refund_mode", {"mode": "succeed"})
            world.fail_next(0)
            try:
                yield world
            finally:
                # deliveries of this test's events go to this test's database, not the next one's
                world.delivery(True)
                world.flush()
                servers.app.state.payments = None
                world.close()
    finally:
        servers.run(service.aclose())
        servers.run(resources.aclose())
