"""Idempotency-Key on POST /orders/{order_id}/refund, through the real SDK and the Stripe stand-in: a retry
with the same key answers the first refund and Stripe refunds once, also when the first request's answer
from Stripe was lost; the same key with another body is 422 and refunds nothing."""

from __future__ import annotations

import uuid
from typing import Any

from tests.payments.conftest import Shop
from tests.payments.test_flows import paid_order


def stripe_refunds(shop: Shop, order_id: int) -> list[dict[str, Any]]:
    """The refunds Stripe (the stand-in) made on the order's payment: its refund.created events."""
    [payment] = shop.payments(order_id)
    return shop.events(str(payment["payment_intent_id"]), kind="refund.created")


def refund_posts(shop: Shop) -> list[dict[str, Any]]:
    """POST /v1/refunds requests the stand-in served as new (not as an idempotent replay)."""
    return [r for r in shop.standin_requests("/v1/refunds") if r["method"] == "POST" and not r["replayed"]]


def test_a_retry_with_the_same_key_refunds_once(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1000, quantity=2)
    staff = shop.staff()
    key = str(uuid.uuid4())

    first = shop.refund(order_id, staff, 700, idempotency_key=key)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    retry = shop.refund(order_id, staff, 700, idempotency_key=key)
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["refund_id"] == first.json()["refund_id"]
    assert retry.json()["stripe_refund_id"] == first.json()["stripe_refund_id"]

    shop.flush()
    [payment] = shop.payments(order_id)
    assert [r["amount_minor"] for r in shop.refunds(payment["id"])] == [700]
    assert [e["data"]["object"]["amount"] for e in stripe_refunds(shop, order_id)] == [700]
    assert len(refund_posts(shop)) == 1
    assert shop.order_row(order_id)["refunded_minor"] == 700
    # once confirmed, a retry shows the refund as it stands now, and still sends nothing
    later = shop.refund(order_id, staff, 700, idempotency_key=key)
    assert (later.status_code, later.json()["status"]) == (202, "succeeded")
    assert len(refund_posts(shop)) == 1

    # another key is another refund
    second = shop.refund(order_id, staff, 300, idempotency_key=str(uuid.uuid4()))
    assert second.status_code == 202, second.text
    assert second.json()["refund_id"] != first.json()["refund_id"]


def test_the_same_key_with_another_body_is_422(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1000, quantity=2)
    staff = shop.staff()
    key = str(uuid.uuid4())
    assert shop.refund(order_id, staff, 500, idempotency_key=key).status_code == 202

    other_amount = shop.refund(order_id, staff, 600, idempotency_key=key)
    assert other_amount.status_code == 422, other_amount.text
    assert other_amount.json()["details"] == {"code": "idempotency_key_reused", "field": "idempotency_key"}
    everything = shop.refund(order_id, staff, idempotency_key=key)
    assert everything.status_code == 422, everything.text

    shop.flush()
    [payment] = shop.payments(order_id)
    assert [r["amount_minor"] for r in shop.refunds(payment["id"])] == [500]
    assert len(stripe_refunds(shop, order_id)) == 1


def test_a_retry_after_stripe_did_not_answer_sends_the_same_refund(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1500, quantity=1)
    staff = shop.staff()
    key = str(uuid.uuid4())
    shop.fail_next(3)  # the SDK's three tries of the first request all fail: the refund stays pending
    first = shop.refund(order_id, staff, idempotency_key=key)
    assert first.status_code == 202, first.text
    assert (first.json()["sent"], first.json()["stripe_refund_id"]) == (False, None)

    retry = shop.refund(order_id, staff, idempotency_key=key)
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    body = retry.json()
    assert (body["refund_id"], body["sent"]) == (first.json()["refund_id"], True)
    assert body["stripe_refund_id"].startswith("re_")

    shop.flush()
    assert [e["data"]["object"]["amount"] for e in stripe_refunds(shop, order_id)] == [1500]
    assert shop.order_row(order_id)["status"] == "refunded"
    # the refund went to Stripe under its own key each time: three failures, then one success
    [payment] = shop.payments(order_id)
    [refund] = shop.refunds(payment["id"])
    tries = [
        r for r in shop.standin_requests("/v1/refunds") if r["idempotency_key"] == refund["idempotency_key"]
    ]
    assert [r["status"] for r in tries] == [500, 500, 500, 200]


def test_a_refund_without_a_key_is_not_remembered(shop: Shop) -> None:
    _, order_id, _ = paid_order(shop, price=1000, quantity=2)
    staff = shop.staff()
    assert shop.refund(order_id, staff, 400).status_code == 202
    assert shop.refund(order_id, staff, 400).status_code == 202
    shop.flush()
    assert len(stripe_refunds(shop, order_id)) == 2
    assert shop.value("select count(*) from core.idempotency_keys where user_id = %s", [staff]) == 0
