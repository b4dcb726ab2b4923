"""Webhook storm: 1,000 Stripe deliveries (about 30 % duplicates, shuffled, 8 parallel senders) against the
gateway's POST /webhooks/stripe end in the same books as the same events delivered once, in order, to a
second, identical database.

The events are real: the Stripe stand-in made them while the drill went through Checkout as customers and
staff do: card payments, delayed (bank debit) payments that succeed or fail, a declined card then a good
one, sessions left to expire, a second checkout that could not expire the first (both get paid: one pays,
the other is refunded automatically), a second checkout that did, an order cancelled and then paid anyway,
partial refunds made in the Stripe dashboard and staff refunds through the gateway. The payments of phase 1
are confirmed before the storm (their events are in the storm again, as redeliveries).

Compared between the two databases: orders, payments, refunds (without their ids, which follow arrival
order), and every event's type, payment and outcome. The only outcome that may differ is which of a
refund's two confirmations (refund.created, charge.refunded) was first to count it: "refund_succeeded" and
"refund_already_succeeded" say the same about the books, which are compared exactly.

Refunds that a transition creates (the superseded payment, the cancelled order) are sent to Stripe after
the commit; the stand-in refuses every API call during the deliveries, so both databases keep them pending
alike (reconcile sends them later, as tests/payments shows), and the comparison is not a race between the
two runs for the same idempotency keys.

The storm found two places where arrival order mattered. A superseded attempt's late success was refunded
as "superseded" or "order_not_pending" depending on which success landed first (fixed in
billing.mark_payment_completed; test_superseded_payment_reason_does_not_depend_on_arrival_order keeps it
so). A refund made in the Stripe dashboard whose events landed before its payment's success was rejected
(not_found, 200: never retried) and never counted; it now waits in the inbox until the payment's success
is recorded (test_a_dashboard_refund_delivered_before_its_payment_still_counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from commercecore.standin import BackgroundServer, StandinState, start_standin
from gateway import db as gwdb
from gateway.payments import PaymentService, PaymentSettings
from gateway.payments.service import standalone
from tests.conftest import PgServer, login_url, stripe_client
from tests.db.shop import no_order_limits
from tests.drills.conftest import DrillDb, drill_settings, query_rows, running_gateway

log = logging.getLogger("tests.drills")

DELIVERIES = 1000
SENDERS = 8
BUNDLES = 22  # 32 events each: 704 distinct events, and 296 duplicate deliveries
WEBHOOK_SECRET = "whsec_" + uuid.uuid4().hex


@dataclass(frozen=True)
class Caller:
    """The caller as the gateway puts it on request.state.auth (role + claims; no session to check)."""

    role: str
    claims: dict[str, Any]


def customer_of(user_id: int, role: str = "app_readwrite") -> Caller:
    return Caller(role, {"sub": str(user_id), "role": role})


class World:
    """The drill's stand-in, its Stripe account, and the database the history is made in."""

    def __init__(
        self, state: StandinState, standin_url: str, db: DrillDb, api_key: str, client: stripe.StripeClient
    ) -> None:
        self.state = state
        self.db = db
        self.api_key = api_key
        self.standin = httpx.Client(base_url=standin_url, timeout=30.0)
        self.client = client
        self.settings = PaymentSettings(
            secret_key=self.api_key,
            webhook_secret=WEBHOOK_SECRET,
            api_base=standin_url,
            public_base_url="http://shop.test",
            max_network_retries=0,
            timeout=10.0,
        )
        self.products: list[int] = []
        self.staff = 0

    def service(self, gateway_url: str) -> contextlib.AbstractAsyncContextManager[PaymentService]:
        """The Stripe paths on a pool of their own (the storm's gateway runs them on its own)."""
        return standalone(gateway_url, self.settings, max_size=SENDERS + 2, timeout=10.0)

    # -- the database, as customers and staff -----------------------------------------------------------

    def add_products(self, prefix: str, count: int, stock: int) -> None:
        for index in range(count):
            product_id = self.db.value(
                "insert into core.products (sku, name, price_minor, currency) values (%s, %s, %s, 'EUR')"
                " returning id",
                [f"{prefix}-{index:02d}", f"{prefix.title()} product {index}", 500 + 125 * index],
            )
            self.db.rows(
                "insert into core.inventory_movements (product_id, delta, reason) values (%s, %s, 'restock')",
                [product_id, stock],
            )
            self.products.append(int(product_id))

    def user(self, role: str = "app_readwrite") -> int:
        return int(
            self.db.value(
                "insert into core.users (email, full_name, role) values (%s, 'Storm', %s) returning id",
                [f"storm-{uuid.uuid4().hex[:12]}@example.com", role],
            )
        )

    def as_user(self, user_id: int, query: str, params: list[Any]) -> Any:
        with psycopg.connect(self.db.admin_url) as conn, conn.transaction():
            # a storm customer has every kind of order open at once (tests/db/test_order_limits.py has the
            # limits)
            no_order_limits(conn)
            settings = gwdb.parse_role_settings(conn.execute(gwdb.ROLE_SETTINGS_QUERY).fetchall())
            context, values = gwdb.request_context(
                "app_readwrite", {"sub": str(user_id), "role": "app_readwrite"}, settings
            )
            conn.execute(context, values)
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def order(self, user_id: int, rng: random.Random) -> int:
        lines = [{"product_id": p, "quantity": rng.randint(1, 3)} for p in rng.sample(self.products, 2)]
        return int(self.as_user(user_id, "select api.create_order(%s::jsonb)", [json.dumps(lines)])["id"])

    # -- Stripe ------------------------------------------------------------------------------------------

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.standin.post(f"/_standin/{path}", json=body or {})
        assert response.status_code == 200, response.text
        return response.json()

    async def checkout(self, service: PaymentService, order_id: int, user_id: int) -> str:
        """A checkout session for the order, as the customer starts it; its id."""
        result = await service.start_checkout(order_id, customer_of(user_id))
        return result.checkout_url.rsplit("/", 1)[-1]

    def intent_of(self, session_id: str) -> str:
        intent = self.state.sessions[session_id]["payment_intent"]
        assert isinstance(intent, str)
        return intent


def signed_post(http: httpx.Client, event: dict[str, Any]) -> httpx.Response:
    """One delivery as Stripe makes it: the raw JSON, signed now with the endpoint's secret."""
    payload = json.dumps(event, indent=2)
    header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
    return http.post(
        "/webhooks/stripe",
        content=payload.encode(),
        headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header},
    )


async def make_history(
    world: World, service: PaymentService
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Phase 1 (confirmed in the database before the storm) and phase 2 (the storm's events), each in the
    order Stripe created them."""
    rng = random.Random(20261124)
    # phase 1: two paid orders per bundle, their events applied now, in order
    paid: list[tuple[int, str]] = []
    for _ in range(BUNDLES):
        for _ in range(2):
            user = world.user()
            order_id = world.order(user, rng)
            session = await world.checkout(service, order_id, user)
            world.control(f"sessions/{session}/complete")
            paid.append((order_id, session))
    phase1 = [dict(e) for e in world.state.events.values()]
    for event in phase1:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
        status, body = await service.handle_webhook(payload.encode(), header)
        assert status == 200, body
    marker = {e["id"] for e in phase1}

    # phase 2: everything else a shop sees
    staff = customer_of(world.staff, "app_admin")
    for bundle in range(BUNDLES):
        user = world.user()
        # card payment
        world.control(f"sessions/{await world.checkout(service, world.order(user, rng), user)}/complete")
        # delayed payment that succeeds, one that fails
        session = await world.checkout(service, world.order(user, rng), user)
        world.control(f"sessions/{session}/complete", {"async": True})
        world.control(f"sessions/{session}/async_succeed")
        session = await world.checkout(service, world.order(user, rng), user)
        world.control(f"sessions/{session}/complete", {"async": True})
        world.control(f"sessions/{session}/async_fail")
        # a declined card, then a good one
        session = await world.checkout(service, world.order(user, rng), user)
        world.control(f"sessions/{session}/decline")
        world.control(f"sessions/{session}/complete")
        # left to expire
        world.control(f"sessions/{await world.checkout(service, world.order(user, rng), user)}/expire")
        # a second checkout that could not expire the first: both get paid
        order_id = world.order(user, rng)
        first = await world.checkout(service, order_id, user)
        world.control("fail_next", {"count": 1})
        second = await world.checkout(service, order_id, user)
        world.control(f"sessions/{first}/complete")
        world.control(f"sessions/{second}/complete")
        # a second checkout that expired the first
        order_id = world.order(user, rng)
        await world.checkout(service, order_id, user)
        world.control(f"sessions/{await world.checkout(service, order_id, user)}/complete")
        # cancelled, then paid anyway
        order_id = world.order(user, rng)
        session = await world.checkout(service, order_id, user)
        world.as_user(user, "select api.cancel_order(%s)", [order_id])
        world.control(f"sessions/{session}/complete")
        # a partial refund in the Stripe dashboard, a full staff refund through the gateway
        dashboard_order, dashboard_session = paid[2 * bundle]
        world.client.v1.refunds.create({"payment_intent": world.intent_of(dashboard_session), "amount": 100})
        staff_order, _staff_session = paid[2 * bundle + 1]
        answer = await service.refund_order(staff_order, None, staff)
        assert answer.status == 202, answer.body
        assert dashboard_order != staff_order
    phase2 = [dict(e) for e in world.state.events.values() if e["id"] not in marker]
    return phase1, phase2


@pytest.fixture
def standin() -> Iterator[tuple[BackgroundServer, StandinState]]:
    server, state = start_standin(webhook_secret=WEBHOOK_SECRET)  # no webhook URL: we deliver ourselves
    try:
        yield server, state
    finally:
        server.stop()


def books(url: str) -> dict[str, Any]:
    """What the events decided, in a form two databases can be compared in."""

    def outcome(text: str | None) -> str | None:
        # which confirmation of a refund counted it first is arrival order; that it succeeded is not
        if text is None:
            return None
        parts = {p.replace("refund_already_succeeded", "refund_succeeded") for p in text.split(",")}
        return ",".join(sorted(parts))

    return {
        "orders": query_rows(
            url, "select id, status, total_minor, refunded_minor, cancel_reason from core.orders order by id"
        ),
        "payments": query_rows(
            url,
            "select p.id, p.order_id, p.attempt, p.status, p.amount_minor, p.currency, p.applied,"
            " p.refund_required, p.refund_reason, p.refunded_minor, p.checkout_session_id,"
            " p.payment_intent_id, p.failure_reason from core.payments as p order by p.id",
        ),
        # refund ids follow arrival order (a transition creates its refund when its event lands)
        "refunds": sorted(
            query_rows(
                url,
                "select r.payment_id, r.amount_minor, r.currency, r.status, r.reason,"
                " coalesce(r.stripe_refund_id, ''), coalesce(r.failure_reason, '') from core.refunds as r",
            )
        ),
        "events": [
            (event_id, kind, outcome(result), payment_id, processed)
            for event_id, kind, result, payment_id, processed in query_rows(
                url,
                "select id, type, outcome, payment_id, processed_at is not null"
                " from core.stripe_events order by id",
            )
        ],
        "stock": query_rows(url, "select id, stock from core.products order by id"),
    }


def test_webhook_storm_ends_as_ordered_delivery(
    pg: PgServer, drill_db: DrillDb, gateway_password: str, standin: tuple[BackgroundServer, StandinState]
) -> None:
    server, state = standin
    api_key = f"sk_test_{uuid.uuid4().hex}"
    with stripe_client(api_key, server.url) as client:
        world = World(state, server.url, drill_db, api_key, client)
        try:
            run_storm(pg, drill_db, gateway_password, world)
        finally:
            world.standin.close()


def run_storm(pg: PgServer, drill_db: DrillDb, gateway_password: str, world: World) -> None:
    world.add_products("STORM", 12, 10000)
    world.staff = world.user("app_admin")

    async def history() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with world.service(drill_db.gateway_url) as service:
            return await make_history(world, service)

    started = time.monotonic()
    phase1, phase2 = asyncio.run(history())
    kinds = Counter(e["type"] for e in phase2)
    assert len(phase2) == 32 * BUNDLES, kinds
    assert {"checkout.session.completed", "checkout.session.expired", "checkout.session.async_payment_failed",
            "checkout.session.async_payment_succeeded", "payment_intent.payment_failed", "refund.created",
            "charge.refunded"} <= set(kinds)  # fmt: skip

    # two identical databases from the one the history was made in
    clones = []
    for role in ("storm", "ordered"):
        name = f"{drill_db.name}_{role}"
        url = pg.create_db(name, template=drill_db.name)
        clones.append((name, url))
    try:
        (_, storm_url), (_, ordered_url) = clones
        # Stripe refuses every API call while events are delivered: transitions' refunds stay pending alike
        world.control("fail_next", {"count": 10**6, "status": 500})
        made = time.monotonic()
        storm_answers = storm(world, login_url(storm_url, "authenticator", gateway_password), phase1, phase2)
        stormed = time.monotonic()
        # the reference: the webhook's own code path (what the route calls), one event at a time
        apply_in_order(world, login_url(ordered_url, "authenticator", gateway_password), phase2)
        world.control("fail_next", {"count": 0})
        log.info(
            "webhook storm: history of %d + %d events made in %.1f s; %d deliveries by %d senders in %.1f s;"
            " %d in order in %.1f s",
            len(phase1),
            len(phase2),
            made - started,
            DELIVERIES,
            SENDERS,
            stormed - made,
            len(phase2),
            time.monotonic() - stormed,
        )

        assert Counter(status for status, _ in storm_answers) == {200: DELIVERIES}
        # each distinct event was applied exactly once; every other delivery was a harmless duplicate
        fresh = Counter(body["id"] for _, body in storm_answers if body.get("duplicate") is False)
        assert set(fresh) == {e["id"] for e in phase2}
        assert set(fresh.values()) == {1}

        storm_books, ordered_books = books(storm_url), books(ordered_url)
        for part in storm_books:
            assert storm_books[part] == ordered_books[part], part
        assert len(storm_books["events"]) == len(phase1) + len(phase2)
        assert all(processed for *_, processed in storm_books["events"])
        log.info("webhook storm outcomes: %s", dict(Counter(row[2] for row in storm_books["events"])))
        statuses = Counter(row[1] for row in storm_books["orders"])
        assert statuses["paid"] > 0
        assert statuses["refunded"] > 0
        assert statuses["cancelled"] > 0
    finally:
        for name, _url in clones:
            pg.drop_db(name)


def storm(
    world: World, gateway_url: str, phase1: list[dict[str, Any]], phase2: list[dict[str, Any]]
) -> list[tuple[int, dict[str, Any]]]:
    """Every phase-2 event once plus duplicates (of both phases) up to DELIVERIES, shuffled, 8 senders."""
    rng = random.Random(1000)
    deliveries = phase2 + rng.choices(phase1 + phase2, k=DELIVERIES - len(phase2))
    rng.shuffle(deliveries)
    assert 0.25 <= (DELIVERIES - len(phase2)) / DELIVERIES <= 0.35
    work: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    for event in deliveries:
        work.put(event)
    answers: list[tuple[int, dict[str, Any]]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def sender(base_url: str) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=30.0) as http:
                while True:
                    try:
                        event = work.get_nowait()
                    except queue.Empty:
                        return
                    response = signed_post(http, event)
                    with lock:
                        answers.append((response.status_code, response.json()))
        except Exception as exc:  # reported by the test, not lost in a thread
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    # the gateway's pool serves the webhooks: as many connections as the senders and the pool of their own
    # the Stripe paths had before
    settings = drill_settings(gateway_url, pool_max=SENDERS + 2)
    with running_gateway(settings, payments=PaymentService(world.settings)) as base_url:
        started = time.monotonic()
        threads = [threading.Thread(target=sender, args=(base_url,)) for _ in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a sender is stuck"
        elapsed = time.monotonic() - started
    assert not errors, errors[:5]
    assert len(answers) == DELIVERIES, (len(answers), elapsed)
    return answers


def apply_in_order(world: World, url: str, events: list[dict[str, Any]]) -> None:
    """The events delivered to one database in this order, through the webhook's own code path."""

    async def deliver() -> None:
        async with world.service(url) as service:
            for event in events:
                payload = json.dumps(event)
                header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
                status, body = await service.handle_webhook(payload.encode(), header)
                assert status == 200, body

    asyncio.run(deliver())


def test_superseded_payment_reason_does_not_depend_on_arrival_order(
    pg: PgServer, drill_db: DrillDb, gateway_password: str, standin: tuple[BackgroundServer, StandinState]
) -> None:
    """One order, two checkouts (the second could not expire the first), both paid: the late payment of
    attempt 1 is refunded for the same reason whichever success is delivered first."""
    server, state = standin
    api_key = f"sk_test_{uuid.uuid4().hex}"
    with stripe_client(api_key, server.url) as client:
        world = World(state, server.url, drill_db, api_key, client)
        with contextlib.closing(world.standin):
            world.add_products("LATE", 2, 10)
            user = world.user()
            order_id = world.order(user, random.Random(1))

            async def two_checkouts() -> tuple[str, str]:
                async with world.service(drill_db.gateway_url) as service:
                    first = await world.checkout(service, order_id, user)
                    world.control("fail_next", {"count": 1})  # the second checkout cannot expire the first
                    return first, await world.checkout(service, order_id, user)

            first, second = asyncio.run(two_checkouts())
            world.control(f"sessions/{first}/complete")
            world.control(f"sessions/{second}/complete")
            completed = {
                e["data"]["object"]["id"]: e
                for e in state.events.values()
                if e["type"] == "checkout.session.completed"
            }
            world.control("fail_next", {"count": 10**6})  # the automatic refund stays pending in both
            reasons = []
            for suffix, sessions in (("first", (first, second)), ("second", (second, first))):
                name = f"{drill_db.name}_{suffix}"
                url = pg.create_db(name, template=drill_db.name)
                try:
                    apply_in_order(
                        world,
                        login_url(url, "authenticator", gateway_password),
                        [completed[s] for s in sessions],
                    )
                    reasons.append(
                        query_rows(
                            url,
                            "select refund_reason from core.payments where order_id = %s and attempt = 1",
                            [order_id],
                        )
                    )
                finally:
                    pg.drop_db(name)
            world.control("fail_next", {"count": 0})
    assert reasons[0] == [("superseded",)]
    assert reasons[1] == reasons[0]


def test_a_dashboard_refund_delivered_before_its_payment_still_counts(
    drill_db: DrillDb, standin: tuple[BackgroundServer, StandinState]
) -> None:
    """Stripe does not order its events: a refund made in the Stripe dashboard soon after a payment may be
    delivered before the payment's checkout.session.completed (a webhook retried after an outage, as in the
    crash drill). Once both are delivered the books must hold the refund, as they do in creation order."""
    server, state = standin
    api_key = f"sk_test_{uuid.uuid4().hex}"
    with stripe_client(api_key, server.url) as client:
        world = World(state, server.url, drill_db, api_key, client)
        with contextlib.closing(world.standin):
            world.add_products("EARLY", 2, 10)
            user = world.user()
            order_id = world.order(user, random.Random(2))

            async def one_checkout() -> str:
                async with world.service(drill_db.gateway_url) as service:
                    return await world.checkout(service, order_id, user)

            session = asyncio.run(one_checkout())
            world.control(f"sessions/{session}/complete")
            client.v1.refunds.create({"payment_intent": world.intent_of(session), "amount": 100})
            events = list(state.events.values())
            refund_kinds = ("refund.created", "charge.refunded")
            early = [e for e in events if e["type"] in refund_kinds] + [
                e for e in events if e["type"] not in refund_kinds
            ]
            apply_in_order(world, drill_db.gateway_url, early)
    outcomes = drill_db.rows("select type, outcome from core.stripe_events order by received_at")
    refunded = drill_db.value("select refunded_minor from core.payments where order_id = %s", [order_id])
    assert refunded == 100, outcomes
    # the early refund events waited in the inbox, then were applied once (the second is a no-op)
    assert [(kind, outcome) for kind, outcome in outcomes if kind in refund_kinds] == [
        ("refund.created", "refund_succeeded"),
        ("charge.refunded", "refund_already_succeeded"),
    ], outcomes
    assert drill_db.rows(
        "select r.status, r.amount_minor, r.reason, o.status, o.refunded_minor from core.refunds as r"
        " join core.payments as p on r.payment_id = p.id join core.orders as o on p.order_id = o.id"
        " where o.id = %s",
        [order_id],
    ) == [("succeeded", 100, "staff", "paid", 100)]
