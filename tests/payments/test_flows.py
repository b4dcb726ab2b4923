"""Checkout end to end: the real SDK, the stand-in's hosted page and webhooks, the billing state machine."""

from __future__ import annotations

import datetime
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request

from gateway.errors import ApiError
from gateway.payments import PaymentService
from tests.payments.conftest import PUBLIC_BASE_URL, Shop


def paid_order(shop: Shop, price: int = 1250, quantity: int = 2) -> tuple[int, int, dict[str, object]]:
    """A customer's order paid by card through checkout; (customer, order, checkout body)."""
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(price), quantity)])
    started = shop.start(order_id, customer)
    shop.complete(str(started["session_id"]))
    shop.flush()
    assert shop.order_row(order_id)["status"] == "paid"
    return customer, order_id, started


def test_pay_through_the_hosted_page(shop: Shop) -> None:
    customer = shop.customer()
    hat, shoe = shop.product(1250), shop.product(899)
    order_id = shop.order(customer, [(hat, 2), (shoe, 1)])

    response = shop.checkout(order_id, customer)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"payment_id", "checkout_url", "expires_at"}
    expires_at = datetime.datetime.fromisoformat(body["expires_at"])
    assert expires_at - datetime.datetime.now(datetime.UTC) > datetime.timedelta(minutes=29)
    [payment] = shop.payments(order_id)
    assert payment["status"] == "open"
    assert payment["id"] == body["payment_id"]
    assert payment["amount_minor"] == 2 * 1250 + 899

    # the session carries the order's price snapshots and our ids
    session = shop.stripe.v1.checkout.sessions.retrieve(payment["checkout_session_id"])
    assert session.amount_total == 3399
    assert session.currency == "eur"
    assert session.client_reference_id == str(payment["id"])
    assert session.metadata is not None
    assert session.metadata.to_dict() == {
        "order_id": str(order_id),
        "payment_id": str(payment["id"]),
        "attempt": "1",
    }
    assert session.success_url is not None
    assert session.success_url.startswith(f"{PUBLIC_BASE_URL}/checkout/success")
    lines = shop.stripe.v1.checkout.sessions.line_items.list(payment["checkout_session_id"])
    assert sorted((line.quantity, line.amount_total) for line in lines.data) == [(1, 899), (2, 2500)]

    page = httpx.get(body["checkout_url"])
    assert page.status_code == 200
    assert ">Pay</button>" in page.text
    assert ">Decline</button>" in page.text
    assert "<script" not in page.text
    paid = httpx.post(body["checkout_url"], data={"action": "pay", "method": "card"})
    assert paid.status_code == 303
    assert paid.headers["location"] == (
        f"{PUBLIC_BASE_URL}/checkout/success?order_id={order_id}&session_id={payment['checkout_session_id']}"
    )
    shop.flush()

    assert shop.order_row(order_id)["status"] == "paid"
    [payment] = shop.payments(order_id)
    assert payment["status"] == "succeeded"
    assert payment["applied"] is True
    assert payment["payment_intent_id"].startswith("pi_")
    inbox = {e["type"]: e for e in shop.inbox()}
    assert inbox["checkout.session.completed"]["outcome"] == "paid"
    assert inbox["checkout.session.completed"]["payment_id"] == payment["id"]
    assert inbox["payment_intent.succeeded"]["outcome"] == "recorded"
    assert inbox["charge.succeeded"]["outcome"] == "ignored"
    assert all(e["processed_at"] is not None for e in inbox.values())
    assert shop.transitions("core.payments", payment["id"]) == [("created", "open"), ("open", "succeeded")]
    assert shop.transitions("core.orders", order_id) == [("pending", "paid")]
    # the audit rows name the payment path as the actor role
    roles = shop.sql(
        "select distinct actor_role from audit.log where table_name = 'core.payments' and row_id = %s",
        [str(payment["id"])],
    )
    assert roles == [("app_payments",)]

    # paid: no second checkout
    again = shop.checkout(order_id, customer)
    assert again.status_code == 409
    assert again.json()["details"]["code"] == "order_not_payable"

    # the success page the customer lands on
    landing = shop.http.get("/checkout/success", params={"order_id": order_id})
    assert landing.status_code == 200
    assert f"order {order_id}" in landing.text


def test_decline_leaves_the_session_open_and_a_retry_pays(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    started = shop.start(order_id, customer)

    declined = httpx.post(started["checkout_url"], data={"action": "decline", "method": "card"})
    assert declined.status_code == 303
    assert declined.headers["location"].startswith(f"{PUBLIC_BASE_URL}/checkout/cancel")
    shop.flush()
    [payment] = shop.payments(order_id)
    assert payment["status"] == "open"  # Checkout lets the customer try another card
    assert shop.order_row(order_id)["status"] == "pending"
    [failed_event] = [e for e in shop.inbox() if e["type"] == "payment_intent.payment_failed"]
    assert failed_event["outcome"] == "recorded"
    assert failed_event["payment_id"] == payment["id"]

    shop.complete(started["session_id"])
    shop.flush()
    assert shop.order_row(order_id)["status"] == "paid"
    assert shop.payments(order_id)[0]["status"] == "succeeded"


def test_async_payment_succeeds_later(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    started = shop.start(order_id, customer)

    paid = httpx.post(started["checkout_url"], data={"action": "pay", "method": "sepa_debit"})
    assert paid.status_code == 303
    shop.flush()
    assert shop.payments(order_id)[0]["status"] == "open"
    assert shop.order_row(order_id)["status"] == "pending"
    [completed] = [e for e in shop.inbox() if e["type"] == "checkout.session.completed"]
    assert completed["outcome"] == "awaiting_async_payment"

    shop.control(f"sessions/{started['session_id']}/async_succeed")
    shop.flush()
    assert shop.order_row(order_id)["status"] == "paid"
    [payment] = shop.payments(order_id)
    assert (payment["status"], payment["applied"]) == ("succeeded", True)
    [succeeded] = [e for e in shop.inbox() if e["type"] == "checkout.session.async_payment_succeeded"]
    assert succeeded["outcome"] == "paid"


def test_async_payment_fails_then_a_second_attempt_pays(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 3)])
    first = shop.start(order_id, customer)
    shop.complete(first["session_id"], delayed=True)
    shop.control(f"sessions/{first['session_id']}/async_fail")
    shop.flush()
    [payment] = shop.payments(order_id)
    assert payment["status"] == "failed"
    assert payment["failure_reason"] == "async_payment_failed"
    assert shop.order_row(order_id)["status"] == "pending"

    second = shop.start(order_id, customer)
    assert second["payment_id"] != first["payment_id"]
    shop.complete(second["session_id"])
    shop.flush()
    first_row, second_row = shop.payments(order_id)
    assert (first_row["status"], first_row["applied"]) == ("failed", False)
    assert (second_row["attempt"], second_row["status"], second_row["applied"]) == (2, "succeeded", True)
    assert shop.order_row(order_id)["status"] == "paid"


def test_session_expiry_then_a_new_attempt(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    first = shop.start(order_id, customer)
    shop.control(f"sessions/{first['session_id']}/expire")
    shop.flush()
    [payment] = shop.payments(order_id)
    assert payment["status"] == "expired"
    assert shop.order_row(order_id)["status"] == "pending"
    assert httpx.get(first["checkout_url"]).text.count("expired") >= 1

    second = shop.start(order_id, customer)
    shop.complete(second["session_id"])
    shop.flush()
    assert [p["status"] for p in shop.payments(order_id)] == ["expired", "succeeded"]
    assert shop.order_row(order_id)["status"] == "paid"


def test_a_new_checkout_expires_the_previous_session(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    first = shop.start(order_id, customer)
    second = shop.start(order_id, customer)
    shop.flush()
    session = shop.stripe.v1.checkout.sessions.retrieve(first["session_id"])
    assert session.status == "expired"
    old, new = shop.payments(order_id)
    assert old["status"] == "canceled"
    assert old["failure_reason"] == "superseded by attempt 2"
    assert new["status"] == "open"
    # the late checkout.session.expired of the old session changes nothing
    assert shop.transitions("core.payments", old["id"]) == [("created", "open"), ("open", "canceled")]
    shop.complete(second["session_id"])
    shop.flush()
    assert shop.order_row(order_id)["status"] == "paid"


def test_late_payment_on_a_superseded_attempt_is_refunded(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(2000), 1)])
    first = shop.start(order_id, customer)
    # Stripe does not answer while the second checkout tries to expire the first session (3 tries: the
    # SDK's 2 retries), so the first session stays payable ...
    shop.fail_next(3)
    second = shop.start(order_id, customer)
    old, new = shop.payments(order_id)
    assert (old["status"], new["status"]) == ("open", "open")
    # ... and the customer pays it, in another tab
    shop.complete(first["session_id"])
    shop.flush()

    old, new = shop.payments(order_id)
    assert old["status"] == "refunded"  # succeeded, refunded automatically, confirmed by charge.refunded
    assert (old["applied"], old["refund_required"], old["refund_reason"]) == (False, True, "superseded")
    assert old["refunded_minor"] == 2000
    [refund] = shop.refunds(old["id"])
    assert (refund["status"], refund["amount_minor"], refund["reason"]) == ("succeeded", 2000, "superseded")
    assert refund["stripe_refund_id"].startswith("re_")
    assert re.fullmatch(rf"cc_refund_{old['id']}_1_[0-9a-f]{{16}}", refund["idempotency_key"])
    stripe_refund = shop.stripe.v1.refunds.retrieve(refund["stripe_refund_id"])
    assert stripe_refund.payment_intent == old["payment_intent_id"]
    assert stripe_refund.reason == "duplicate"
    assert shop.order_row(order_id)["status"] == "pending"
    assert new["status"] == "open"

    shop.complete(second["session_id"])
    shop.flush()
    assert shop.order_row(order_id) == {
        "status": "paid",
        "total_minor": 2000,
        "refunded_minor": 0,
        "currency": "EUR",
    }


def test_payment_after_the_order_was_cancelled_is_refunded(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(700), 2)])
    started = shop.start(order_id, customer)
    shop.cancel(customer, order_id)
    shop.complete(started["session_id"])
    shop.flush()

    assert shop.order_row(order_id)["status"] == "cancelled"
    [payment] = shop.payments(order_id)
    assert (payment["status"], payment["refund_reason"], payment["refunded_minor"]) == (
        "refunded",
        "order_not_pending",
        1400,
    )
    [refund] = shop.refunds(payment["id"])
    assert refund["status"] == "succeeded"
    [completed] = [e for e in shop.inbox() if e["type"] == "checkout.session.completed"]
    assert completed["outcome"] == "refund_required"


def test_staff_refunds_partial_then_the_rest(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1000, quantity=3)
    staff = shop.staff()

    partial = shop.refund(order_id, staff, 1200)
    assert partial.status_code == 202, partial.text
    body = partial.json()
    assert body["amount_minor"] == 1200
    assert body["status"] == "pending"
    assert body["stripe_refund_id"].startswith("re_")
    shop.flush()
    assert shop.order_row(order_id) == {
        "status": "paid",
        "total_minor": 3000,
        "refunded_minor": 1200,
        "currency": "EUR",
    }

    too_much = shop.refund(order_id, staff, 5000)
    assert too_much.status_code == 409
    assert too_much.json()["details"]["code"] == "refund_exceeds_balance"

    rest = shop.refund(order_id, staff)
    assert rest.status_code == 202, rest.text
    assert rest.json()["amount_minor"] == 1800
    shop.flush()
    assert shop.order_row(order_id)["status"] == "refunded"
    assert shop.order_row(order_id)["refunded_minor"] == 3000
    [payment] = shop.payments(order_id)
    assert (payment["status"], payment["refunded_minor"]) == ("refunded", 3000)
    refunds = shop.refunds(payment["id"])
    assert [(r["amount_minor"], r["status"], r["reason"]) for r in refunds] == [
        (1200, "succeeded", "staff"),
        (1800, "succeeded", "staff"),
    ]
    requested_by = shop.sql(
        "select distinct requested_by from core.refunds where payment_id = %s", [payment["id"]]
    )
    assert requested_by == [(staff,)]
    nothing_left = shop.refund(order_id, staff)
    assert nothing_left.status_code == 409


def test_refund_failed_at_stripe(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1500, quantity=1)
    staff = shop.staff()
    shop.control("refund_mode", {"mode": "pending"})
    response = shop.refund(order_id, staff, 500)
    assert response.status_code == 202, response.text
    stripe_refund_id = response.json()["stripe_refund_id"]
    shop.flush()
    [payment] = shop.payments(order_id)
    [refund] = shop.refunds(payment["id"])
    assert refund["status"] == "pending"

    shop.control(f"refunds/{stripe_refund_id}/fail")
    shop.flush()
    [refund] = shop.refunds(payment["id"])
    assert refund["status"] == "failed"
    assert shop.order_row(order_id)["refunded_minor"] == 0
    # its amount is refundable again
    again = shop.refund(order_id, staff, 1500)
    assert again.status_code == 202, again.text


def test_refund_refused_by_stripe_is_502_and_marked_failed(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1500, quantity=1)
    staff = shop.staff()
    shop.fail_next(1, status=400, type="invalid_request_error", code="charge_disputed", message="Disputed.")
    response = shop.refund(order_id, staff, 500)
    assert response.status_code == 502, response.text
    error = response.json()
    assert set(error) == {"code", "message", "details", "hint"}
    assert error["details"]["stripe_code"] == "charge_disputed"
    [payment] = shop.payments(order_id)
    [refund] = shop.refunds(payment["id"])
    assert refund["status"] == "failed"


def test_who_may_check_out_and_refund(shop: Shop) -> None:
    owner, stranger, staff = shop.customer(), shop.customer(), shop.staff()
    order_id = shop.order(owner, [(shop.product(), 1)])

    anonymous = shop.checkout(order_id, None, role="app_readonly")
    assert anonymous.status_code == 401
    other = shop.checkout(order_id, stranger)
    assert other.status_code == 404
    assert other.json()["details"]["code"] == "not_found"
    missing = shop.checkout(987654, owner)
    assert missing.status_code == 404
    assert shop.payments(order_id) == []

    by_staff = shop.checkout(order_id, staff, role="app_admin")
    assert by_staff.status_code == 201

    # a customer cannot refund, not even their own order; staff cannot refund what is not paid
    forbidden = shop.http.post(
        f"/orders/{order_id}/refund",
        json={},
        headers={"X-Test-Role": "app_readwrite", "X-Test-Sub": str(owner)},
    )
    assert forbidden.status_code == 403
    unpaid = shop.refund(order_id, staff)
    assert unpaid.status_code == 409
    assert unpaid.json()["details"]["code"] == "order_not_refundable"
    bad = shop.refund(order_id, staff, -5)
    assert bad.status_code == 422
    unknown = shop.http.post(
        f"/orders/{order_id}/refund",
        json={"amount": 5, "reason": "x"},
        headers={"X-Test-Role": "app_admin", "X-Test-Sub": str(staff)},
    )
    assert unknown.status_code == 400


@dataclass(frozen=True)
class SessionIdentity:
    """Shaped like the gateway's db.Identity: with a session (jti) the database checks it is still active."""

    role: str
    claims: dict[str, Any]
    jti: str | None = None
    user_id: int | None = None


def test_identity_from_the_gateway_hook_and_revoked_sessions(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    live, revoked, other_role = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    shop.sql(
        "insert into auth.sessions (jti, user_id, role, expires_at, revoked_at) values"
        " (%s, %s, 'app_readwrite', now() + interval '1 hour', null),"
        " (%s, %s, 'app_readwrite', now() + interval '1 hour', now()),"
        " (%s, %s, 'app_admin', now() + interval '1 hour', null)",
        [live, customer, revoked, customer, other_role, customer],
    )

    def authenticate(request: Request) -> SessionIdentity:
        token = request.headers.get("authorization", "")
        if not token.startswith("Session "):
            raise ApiError(401, "PGRST301", "No token.", details={"code": "invalid_token"})
        claims = {"sub": str(customer), "role": "app_readwrite"}
        return SessionIdentity("app_readwrite", claims, token.removeprefix("Session "), customer)

    working = shop.service
    checked = PaymentService(working.settings, client=working.client, authenticate=authenticate)
    checked.bind(working.store)
    shop.servers.app.state.payments = checked
    try:
        assert shop.http.post(f"/orders/{order_id}/checkout").status_code == 401
        ended = shop.http.post(
            f"/orders/{order_id}/checkout", headers={"Authorization": f"Session {revoked}"}
        )
        assert ended.status_code == 401
        assert ended.json()["details"]["code"] == "session_revoked"
        # a session issued with another role than the caller's token claims
        mismatched = shop.http.post(
            f"/orders/{order_id}/checkout", headers={"Authorization": f"Session {other_role}"}
        )
        assert mismatched.status_code == 401
        assert shop.payments(order_id) == []
        ok = shop.http.post(f"/orders/{order_id}/checkout", headers={"Authorization": f"Session {live}"})
        assert ok.status_code == 201, ok.text
    finally:
        shop.servers.app.state.payments = working


def test_parallel_checkouts_leave_one_payable_session(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: shop.checkout(order_id, customer), range(4)))
    assert {r.status_code for r in responses} <= {201, 409}
    assert any(r.status_code == 201 for r in responses)
    shop.flush()
    attempts = shop.payments(order_id)
    assert len(attempts) == 4
    [live] = [p for p in attempts if p["status"] == "open"]
    assert {p["status"] for p in attempts if p is not live} == {"canceled"}
    assert live["attempt"] == 4
    # at Stripe, only the live attempt's session can still be paid
    sessions = shop.standin.get("/_standin/sessions", params={"account": shop.account}).json()["data"]
    assert [s["id"] for s in sessions if s["status"] == "open"] == [live["checkout_session_id"]]
    shop.complete(str(live["checkout_session_id"]))
    shop.flush()
    assert shop.order_row(order_id)["status"] == "paid"
