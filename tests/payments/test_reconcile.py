"""Missed webhooks: with delivery off at the stand-in, `reconcile` brings every attempt and refund to the
state the webhooks would have; a second run changes nothing; the late webhooks change nothing either."""

from __future__ import annotations

import datetime
import json
from typing import Any

from click.testing import CliRunner

from commercecore.cli.common import parse_duration
from commercecore.cli.payments import payments
from gateway.payments.reconcile import reconcile
from tests.db.shop import no_order_limits_in_database
from tests.payments.conftest import WEBHOOK_SECRET, Shop


def snapshot(shop: Shop, order_ids: list[int]) -> list[Any]:
    return [(shop.order_row(o), shop.payments(o)) for o in order_ids]


def test_reconcile_after_missed_webhooks(shop: Shop) -> None:
    no_order_limits_in_database(shop.admin_url)  # one customer has every kind of open order at once
    customer, staff = shop.customer(), shop.staff()
    product = shop.product(1000)
    # G: paid while webhooks still arrived
    order_g = shop.order(customer, [(product, 4)])
    shop.complete(shop.start(order_g, customer)["session_id"])
    shop.flush()
    assert shop.order_row(order_g)["status"] == "paid"

    shop.delivery(False)
    marker = shop.event_marker()
    orders = {name: shop.order(customer, [(product, 1)]) for name in "ABCDEFH"}
    started = {name: shop.start(orders[name], customer) for name in "ABCDE"}
    shop.complete(started["A"]["session_id"])  # paid
    shop.control(f"sessions/{started['B']['session_id']}/expire")  # expired
    # C: left open
    shop.complete(started["D"]["session_id"], delayed=True)  # bank debit still processing
    shop.control(f"sessions/{started['E']['session_id']}/decline", {"async": True})  # bank debit refused
    f1 = shop.start(orders["F"], customer)  # F: a late payment on a superseded attempt
    shop.fail_next(3)
    shop.start(orders["F"], customer)
    shop.complete(f1["session_id"])
    # H: an attempt begun but never given a session (the process died in between)
    shop.as_payments(customer, "select billing.begin_payment(%s)", [orders["H"]])
    # G: a staff refund while Stripe does not answer: recorded, not sent
    shop.fail_next(3)
    deferred = shop.refund(order_g, staff, 1500)
    assert deferred.status_code == 202, deferred.text
    assert deferred.json()["stripe_refund_id"] is None
    missed = shop.new_events(marker)

    report = reconcile(shop.gateway_url, shop.service.settings, datetime.timedelta(0))
    assert report.errors == []
    assert report.checked == 8
    assert dict(report.outcomes) == {
        "paid": 1,
        "expired": 1,
        "still_open": 2,  # C, and F's second attempt
        "awaiting_async_payment": 1,
        "failed": 2,  # E (the debit failed), H (no session)
        "refund_required": 1,  # F's first attempt
    }
    assert (report.refunds_sent, report.refunds_confirmed) == (2, 2)  # F's automatic one, G's staff one

    status = {name: [p["status"] for p in shop.payments(order_id)] for name, order_id in orders.items()}
    assert status == {
        "A": ["succeeded"],
        "B": ["expired"],
        "C": ["open"],
        "D": ["open"],
        "E": ["failed"],
        "F": ["refunded", "open"],
        "H": ["failed"],
    }
    assert {name: shop.order_row(o)["status"] for name, o in orders.items()} == {
        "A": "paid", "B": "pending", "C": "pending", "D": "pending", "E": "pending", "F": "pending",
        "H": "pending",
    }  # fmt: skip
    assert shop.payments(orders["E"])[0]["failure_reason"] == "async_payment_failed"
    assert shop.order_row(order_g)["refunded_minor"] == 1500
    [g_refund] = shop.refunds(shop.payments(order_g)[0]["id"])
    assert (g_refund["status"], g_refund["amount_minor"]) == ("succeeded", 1500)
    # the refund went to Stripe with its own idempotency key: tried 3 times by the checkout's SDK call,
    # then once by reconcile
    tries = [
        r for r in shop.standin_requests("/v1/refunds") if r["idempotency_key"] == g_refund["idempotency_key"]
    ]
    assert [r["status"] for r in tries] == [500, 500, 500, 200]

    # idempotent: a second run changes nothing
    before = snapshot(shop, [order_g, *orders.values()])
    again = reconcile(shop.gateway_url, shop.service.settings, datetime.timedelta(0))
    assert again.errors == []
    assert dict(again.outcomes) == {"still_open": 2, "awaiting_async_payment": 1}
    assert (again.refunds_sent, again.refunds_confirmed) == (0, 0)
    assert snapshot(shop, [order_g, *orders.values()]) == before

    # the webhooks arrive after all: nothing moves either
    shop.delivery(True)
    results = shop.deliver([e["id"] for e in missed])
    assert {r["status"] for r in results} == {200}
    shop.flush()
    assert snapshot(shop, [order_g, *orders.values()]) == before

    # D's debit settles later: the next run pays the order
    shop.delivery(False)
    shop.control(f"sessions/{started['D']['session_id']}/async_succeed")
    last = reconcile(shop.gateway_url, shop.service.settings, datetime.timedelta(0))
    assert last.outcomes["paid"] == 1
    assert shop.order_row(orders["D"])["status"] == "paid"


def test_reconcile_leaves_recent_attempts_alone(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    shop.delivery(False)
    shop.complete(shop.start(order_id, customer)["session_id"])
    report = reconcile(shop.gateway_url, shop.service.settings, datetime.timedelta(minutes=15))
    assert report.checked == 0
    assert shop.payments(order_id)[0]["status"] == "open"


def test_cli_reconcile(shop: Shop) -> None:
    customer = shop.customer()
    order_id = shop.order(customer, [(shop.product(), 1)])
    shop.delivery(False)
    shop.complete(shop.start(order_id, customer)["session_id"])
    env = {
        "STRIPE_SECRET_KEY": shop.service.settings.secret_key,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": shop.service.settings.api_base or "",
        "COMMERCECORE_GATEWAY_URL": shop.gateway_url,
        "COMMERCECORE_DEMO": "",
    }
    runner = CliRunner()
    result = runner.invoke(payments, ["reconcile", "--older-than", "0s", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["checked"] == 1
    assert report["outcomes"] == {"paid": 1}
    assert shop.order_row(order_id)["status"] == "paid"

    result = runner.invoke(payments, ["reconcile"], env=env)
    assert result.exit_code == 0, result.output
    assert "attempts checked: 0" in result.output

    bad = runner.invoke(payments, ["reconcile", "--older-than", "soon"], env=env)
    assert bad.exit_code == 2
    assert "not a duration" in bad.output
    missing = runner.invoke(payments, ["reconcile"], env={**env, "STRIPE_SECRET_KEY": ""})
    assert missing.exit_code == 1
    assert "STRIPE_SECRET_KEY" in missing.output


def test_parse_duration() -> None:
    assert parse_duration("15m") == datetime.timedelta(minutes=15)
    assert parse_duration("1h30m") == datetime.timedelta(minutes=90)
    assert parse_duration("900") == datetime.timedelta(seconds=900)
    assert parse_duration("2d") == datetime.timedelta(days=2)
