"""Stripe failing: 5xx answers retried by the SDK with the same idempotency key, Stripe unreachable (503),
Stripe refusing (502); the attempt is marked failed and the order stays payable."""

from __future__ import annotations

import datetime
import socket
from dataclasses import replace

from commercecore.standin.state import account_of
from gateway.payments import PaymentService
from gateway.payments.reconcile import reconcile
from tests.payments.conftest import Shop


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_stripe_answers_500_twice_then_recovers(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    shop.fail_next(2)
    started = shop.start(order_id, customer)

    prefix = f"checkout_{started['payment_id']}_"
    tries = [
        r
        for r in shop.standin_requests("/v1/checkout/sessions")
        if str(r["idempotency_key"]).startswith(prefix)
    ]
    assert [r["status"] for r in tries] == [500, 500, 200]
    # the SDK's retries: one key, sent three times
    assert len({r["idempotency_key"] for r in tries}) == 1
    sessions = shop.standin.get(
        "/_standin/sessions",
        params={
            "client_reference_id": str(started["payment_id"]),
            "account": account_of(shop.service.settings.secret_key),
        },
    )
    assert [s["id"] for s in sessions.json()["data"]] == [started["session_id"]]
    [payment] = shop.payments(order_id)
    assert (payment["status"], payment["checkout_session_id"]) == ("open", started["session_id"])


def test_stripe_unreachable_is_503_and_the_order_stays_payable(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    working = shop.service
    down = PaymentService(
        replace(
            working.settings,
            api_base=f"http://127.0.0.1:{closed_port()}",
            max_network_retries=1,
            timeout=2.0,
        )
    )
    down.bind(working.store)
    shop.servers.app.state.payments = down
    try:
        response = shop.checkout(order_id, customer)
    finally:
        shop.servers.app.state.payments = working
        shop.servers.run(down.aclose())
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    error = response.json()
    assert set(error) == {"code", "message", "details", "hint"}
    assert error["details"]["code"] == "stripe_unreachable"
    [payment] = shop.payments(order_id)
    assert payment["status"] == "failed"
    assert payment["failure_reason"].startswith("stripe_unreachable")
    assert shop.order_row(order_id)["status"] == "pending"

    started = shop.start(order_id, customer)
    shop.complete(started["session_id"])
    shop.flush()
    assert [p["status"] for p in shop.payments(order_id)] == ["failed", "succeeded"]
    assert shop.order_row(order_id)["status"] == "paid"


def test_stripe_refusal_is_502_and_the_attempt_failed(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    shop.fail_next(1, status=400, type="invalid_request_error", code="parameter_invalid", message="Nope.")
    response = shop.checkout(order_id, customer)
    assert response.status_code == 502, response.text
    error = response.json()
    assert error["code"] == "CC502"
    assert error["details"]["stripe_code"] == "parameter_invalid"
    assert error["details"]["stripe_status"] == 400
    [payment] = shop.payments(order_id)
    assert payment["status"] == "failed"
    assert payment["failure_reason"] == "stripe_400: Nope."
    assert shop.start(order_id, customer)["payment_id"] != payment["id"]


def test_automatic_refund_waits_for_stripe_then_reconcile_sends_it(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(900), 1)])
    first = shop.start(order_id, customer)
    shop.fail_next(3)
    shop.start(order_id, customer)
    # the webhook of the late payment commits the refund, then Stripe does not answer the refund
    shop.delivery(False)
    marker = shop.event_marker()
    shop.complete(first["session_id"])
    completed = [e["id"] for e in shop.new_events(marker) if e["type"] == "checkout.session.completed"]
    shop.fail_next(3)
    [result] = shop.deliver(completed)
    assert result["status"] == 200
    superseded, _ = shop.payments(order_id)
    [refund] = shop.refunds(superseded["id"])
    assert (refund["status"], refund["stripe_refund_id"]) == ("pending", None)

    report = reconcile(shop.gateway_url, shop.service.settings, datetime.timedelta(hours=1))
    assert report.checked == 0
    assert (report.refunds_sent, report.refunds_confirmed, report.errors) == (1, 1, [])
    superseded, live = shop.payments(order_id)
    assert (superseded["status"], superseded["refunded_minor"]) == ("refunded", 900)
    assert live["status"] == "open"
