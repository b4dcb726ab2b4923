"""POST /webhooks/stripe under Stripe's delivery semantics: at least once, in any order, in parallel; and
against forgeries: a bad, stale or tampered signature is refused before anything is stored."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from typing import Any

import stripe

from tests.payments.conftest import WEBHOOK_SECRET, Shop


def post_event(shop: Shop, payload: str, header: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    response = shop.http.post("/webhooks/stripe", content=payload.encode(), headers=headers)
    return response.status_code, response.json()


def signed(payload: str, *, secret: str = WEBHOOK_SECRET, age: int = 0) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, secret, int(time.time()) - age)


def event_json(kind: str, obj: dict[str, Any]) -> str:
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }
    return json.dumps(event)


def test_each_event_five_times_shuffled(shop: Shop) -> None:
    shop.delivery(False)
    marker = shop.event_marker()
    # A: paid by card; B: a delayed payment that succeeds (async events may overtake `completed`);
    # C: a late payment on a superseded attempt (refunded automatically)
    customer = shop.customer()
    order_a = shop.order(customer, [(shop.product(1000), 1)])
    order_b = shop.order(customer, [(shop.product(2000), 1)])
    order_c = shop.order(customer, [(shop.product(3000), 1)])
    shop.complete(shop.start(order_a, customer)["session_id"])
    b = shop.start(order_b, customer)
    shop.complete(b["session_id"], delayed=True)
    shop.control(f"sessions/{b['session_id']}/async_succeed")
    c1 = shop.start(order_c, customer)
    shop.fail_next(3)  # the second checkout cannot expire the first session
    shop.start(order_c, customer)
    shop.complete(c1["session_id"])

    events = shop.new_events(marker)
    assert Counter(e["type"] for e in events)["checkout.session.completed"] == 3
    deliveries = [e["id"] for e in events] * 5
    random.Random(20261124).shuffle(deliveries)
    results = shop.deliver(deliveries)
    assert {r["status"] for r in results} == {200}
    answers = Counter(json.loads(r["body"])["duplicate"] for r in results)
    assert answers == {False: len(events), True: 4 * len(events)}
    shop.flush()  # C's automatic refund went to Stripe after its webhook committed: its events are queued

    payment_a, payment_b = shop.payments(order_a)[0], shop.payments(order_b)[0]
    superseded, live = shop.payments(order_c)
    for payment in (payment_a, payment_b):
        assert shop.transitions("core.payments", payment["id"]) == [
            ("created", "open"),
            ("open", "succeeded"),
        ]
    assert shop.transitions("core.orders", order_a) == [("pending", "paid")]
    assert shop.transitions("core.orders", order_b) == [("pending", "paid")]
    assert shop.transitions("core.orders", order_c) == []
    assert (superseded["status"], superseded["refund_reason"]) == ("succeeded", "superseded")
    assert live["status"] == "open"
    [auto_refund] = shop.refunds(superseded["id"])
    assert auto_refund["status"] == "pending"
    assert auto_refund["stripe_refund_id"] is not None
    assert len(shop.inbox()) == len(events)

    # the refunds' confirmations, five times each, shuffled: C's automatic refund (sent while the webhook
    # above was answered) and a staff refund of part of A
    response = shop.refund(order_a, shop.staff(), 400)
    assert response.status_code == 202, response.text
    refund_events = shop.new_events(marker | {e["id"] for e in events})
    assert Counter(e["type"] for e in refund_events) == {"refund.created": 2, "charge.refunded": 2}
    deliveries = [e["id"] for e in refund_events] * 5
    random.Random(7).shuffle(deliveries)
    assert {r["status"] for r in shop.deliver(deliveries)} == {200}

    payment_a = shop.payments(order_a)[0]
    assert (payment_a["status"], payment_a["refunded_minor"]) == ("succeeded", 400)
    assert shop.order_row(order_a)["refunded_minor"] == 400
    superseded = shop.payments(order_c)[0]
    assert (superseded["status"], superseded["refunded_minor"]) == ("refunded", 3000)
    assert shop.transitions("core.payments", superseded["id"]) == [
        ("created", "open"),
        ("open", "succeeded"),
        ("succeeded", "refunded"),
    ]
    assert [r["status"] for r in shop.refunds(payment_a["id"])] == ["succeeded"]
    refunded_audit = shop.sql(
        "select count(*) from audit.log where table_name = 'core.payments' and row_id = %s"
        " and operation = 'UPDATE'"
        " and (old_row ->> 'refunded_minor') is distinct from (new_row ->> 'refunded_minor')",
        [str(payment_a["id"])],
    )
    assert refunded_audit == [(1,)]


def test_twenty_parallel_deliveries_of_one_event(shop: Shop) -> None:
    shop.delivery(False)
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(1500), 2)])
    started = shop.start(order_id, customer)
    marker = shop.event_marker()
    shop.complete(started["session_id"])
    [completed] = [e for e in shop.new_events(marker) if e["type"] == "checkout.session.completed"]

    results = shop.deliver([completed["id"]] * 20, parallel=True)
    assert [r["status"] for r in results] == [200] * 20
    assert Counter(json.loads(r["body"])["duplicate"] for r in results) == {False: 1, True: 19}
    [payment] = shop.payments(order_id)
    assert shop.transitions("core.payments", payment["id"]) == [("created", "open"), ("open", "succeeded")]
    assert shop.transitions("core.orders", order_id) == [("pending", "paid")]
    assert len(shop.inbox()) == 1

    # a full refund's two confirmations, twenty each, all at once
    marker = shop.event_marker()
    assert shop.refund(order_id, shop.staff()).status_code == 202
    confirmations = [e["id"] for e in shop.new_events(marker)]
    assert len(confirmations) == 2
    results = shop.deliver(confirmations * 20, parallel=True)
    assert {r["status"] for r in results} == {200}
    [payment] = shop.payments(order_id)
    assert (payment["status"], payment["refunded_minor"]) == ("refunded", 3000)
    assert shop.transitions("core.orders", order_id) == [("pending", "paid"), ("paid", "refunded")]
    [refund] = shop.refunds(payment["id"])
    assert refund["status"] == "succeeded"
    outcomes = Counter(e["outcome"] for e in shop.inbox())
    assert outcomes == {"paid": 1, "refund_succeeded": 1, "refund_already_succeeded": 1}


def test_forged_stale_and_tampered_deliveries_store_nothing(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(1000), 1)])
    started = shop.start(order_id, customer)
    [payment] = shop.payments(order_id)
    session = shop.stripe.v1.checkout.sessions.retrieve(started["session_id"]).to_dict()
    session.update(status="complete", payment_status="paid", payment_intent="pi_forged")
    payload = event_json("checkout.session.completed", session)

    cases = {
        "no header": (payload, None),
        "wrong secret": (payload, signed(payload, secret="whsec_someone_else_entirely")),
        "stale": (payload, signed(payload, age=301)),
        "tampered": (payload.replace('"amount_total": 1000', '"amount_total": 1'), signed(payload)),
        "garbage header": (payload, "t=abc,v1=zz"),
        "not an event": ('{"hello": "world"}', signed('{"hello": "world"}')),
        "not json": ("hello", signed("hello")),
        "bad event id": (
            payload.replace('"id": "evt_', '"id": "evx_', 1),
            signed(payload.replace('"id": "evt_', '"id": "evx_', 1)),
        ),
    }
    for name, (body, header) in cases.items():
        status, answer = post_event(shop, body, header)
        assert status == 400, (name, answer)
        assert set(answer) == {"code", "message", "details", "hint"}, name
    assert shop.inbox() == []
    assert shop.payments(order_id)[0]["status"] == "open"
    assert shop.order_row(order_id)["status"] == "pending"
    assert shop.transitions("core.payments", payment["id"]) == [("created", "open")]

    # the same event, signed 299 s ago, is inside the tolerance
    status, answer = post_event(shop, payload, signed(payload, age=299))
    assert (status, answer["outcome"]) == (200, "paid")


def test_unknown_event_types_are_stored_and_acknowledged(shop: Shop) -> None:
    payload = event_json("customer.created", {"id": "cus_123", "object": "customer"})
    status, answer = post_event(shop, payload, signed(payload))
    assert (status, answer["duplicate"], answer["outcome"]) == (200, False, "ignored")
    [stored] = shop.inbox()
    assert (stored["type"], stored["outcome"], stored["payment_id"]) == ("customer.created", "ignored", None)
    assert stored["processed_at"] is not None
    status, answer = post_event(shop, payload, signed(payload))
    assert (status, answer["duplicate"]) == (200, True)
    assert len(shop.inbox()) == 1


def test_events_the_books_cannot_take_are_stored_with_the_reason(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(1000), 1)])
    started = shop.start(order_id, customer)
    [payment] = shop.payments(order_id)
    # another session claiming to be our payment (metadata), e.g. another environment's: refused by billing
    foreign = {
        "id": "cs_test_foreign",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 1000,
        "currency": "eur",
        "payment_intent": "pi_foreign",
        "metadata": {"payment_id": str(payment["id"])},
        "client_reference_id": str(payment["id"]),
    }
    payload = event_json("checkout.session.completed", foreign)
    status, answer = post_event(shop, payload, signed(payload))
    assert status == 200
    assert answer["outcome"] == "rejected:checkout_session_mismatch"
    # and a session nobody knows
    unknown = {**foreign, "id": "cs_test_unknown", "metadata": {}, "client_reference_id": None}
    payload = event_json("checkout.session.completed", unknown)
    status, answer = post_event(shop, payload, signed(payload))
    assert (status, answer["outcome"]) == (200, "unknown_payment")
    assert shop.payments(order_id)[0]["status"] == "open"
    assert sorted(e["outcome"] for e in shop.inbox()) == [
        "rejected:checkout_session_mismatch",
        "unknown_payment",
    ]
    shop.complete(started["session_id"])
    shop.flush()
    assert shop.order_row(order_id)["status"] == "paid"


def test_events_of_the_other_mode_are_kept_as_rejected_and_never_applied(shop: Shop) -> None:
    """The shop runs on a test key (sk_test_...): a live event for its own open checkout, correctly signed,
    is stored as rejected with the reason and acknowledged with 200 (Stripe does not retry it), and pays
    nothing. The stand-in's own event for the same session (livemode false, as for every test key) pays."""
    assert shop.service.settings.livemode is False
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(1000), 1)])
    started = shop.start(order_id, customer)
    [payment] = shop.payments(order_id)
    session = shop.stripe.v1.checkout.sessions.retrieve(started["session_id"]).to_dict()
    session.update(status="complete", payment_status="paid", payment_intent="pi_live_elsewhere")
    live = json.loads(event_json("checkout.session.completed", session))
    live["livemode"] = True
    payload = json.dumps(live)

    status, answer = post_event(shop, payload, signed(payload))
    assert (status, answer["duplicate"], answer["outcome"]) == (200, False, "rejected:livemode_mismatch")
    status, answer = post_event(shop, payload, signed(payload))
    assert (status, answer["duplicate"]) == (200, True)
    [stored] = shop.inbox()
    assert (stored["id"], stored["outcome"], stored["payment_id"]) == (
        live["id"],
        "rejected:livemode_mismatch",
        None,
    )
    assert stored["processed_at"] is not None
    assert shop.payments(order_id)[0]["status"] == "open"
    assert shop.order_row(order_id)["status"] == "pending"
    assert shop.transitions("core.payments", payment["id"]) == [("created", "open")]

    marker = shop.event_marker()
    shop.complete(started["session_id"])
    shop.flush()
    assert all(event["livemode"] is False for event in shop.new_events(marker))
    assert shop.order_row(order_id)["status"] == "paid"
