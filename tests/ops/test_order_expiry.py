"""The maximum age of unpaid orders (ORDER_MAX_UNPAID_AGE, 60 minutes from creation): checkout attempts never
extend it; `ops.expire_unpaid_orders` cancels and restocks past it whatever the attempts, and keeps the
shorter rule of the ttl (stale without a live checkout) before it; `commercecore jobs run --max-age`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Session
from tests.db.shop import detail, shop_setting
from tests.db.test_billing import attach, begin, complete, new_order, new_product, new_user
from tests.db.test_ops import LEDGER_MISMATCHES, as_dba, order_state, stock
from tests.ops.helpers import cli, error_line

ROOT = Path(__file__).resolve().parents[2]
STRIPE_VARS = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "COMMERCECORE_DEMO")


def age(db: Session, order_id: int, interval: str) -> None:
    """Moves an order's creation back (its attempts keep their own times)."""
    db.as_superuser()
    db.conn.execute(
        "update core.orders set created_at = now() - %s::interval where id = %s", [interval, order_id]
    )


def test_the_maximum_age_wins_over_checkout_attempts(db: Session) -> None:
    user = new_user(db.conn)
    product = new_product(db.conn, price_minor=100, stock=100)

    hoarded = new_order(db.conn, user, [(product, 5)])  # a checkout a minute ago, its session still open
    attach(db, begin(db, hoarded)["payment_id"])
    age(db, hoarded, "61 minutes")
    checking_out = new_order(db.conn, user, [(product, 6)])  # younger: its live checkout keeps it
    live = begin(db, checking_out)["payment_id"]
    attach(db, live)
    age(db, checking_out, "45 minutes")
    stale = new_order(db.conn, user, [(product, 7)], age="45 minutes")  # no checkout: stale after the ttl
    refunding = new_order(db.conn, user, [(product, 8)])  # money arrived for a superseded attempt
    superseded = begin(db, refunding)["payment_id"]
    begin(db, refunding)
    assert complete(db, superseded, 800)["outcome"] == "refund_required"
    age(db, refunding, "2 hours")
    paid = new_order(db.conn, user, [(product, 9)])
    complete(db, begin(db, paid)["payment_id"], 900)
    age(db, paid, "2 hours")
    before = stock(db, product)

    as_dba(db)
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 3
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 0
    db.as_superuser()

    for expired in (hoarded, stale, refunding):
        assert order_state(db, expired) == ("cancelled", "expired")
    assert order_state(db, checking_out) == ("pending", None)
    assert order_state(db, paid) == ("paid", None)
    assert stock(db, product) == before + 5 + 7 + 8
    assert db.one(LEDGER_MISMATCHES) == 0
    notes = dict(
        db.all(
            "select order_id, note from core.inventory_movements where reason = 'order_expired'"
            " and order_id = any(%s)",
            [[hoarded, stale]],
        )
    )
    assert notes == {hoarded: "unpaid order reached its maximum age", stale: "unpaid order expired"}
    # the hoarder's open attempt closed with the order; the live one is untouched
    attempts = db.all(
        "select order_id, status, failure_reason from core.payments where order_id = any(%s) order by id",
        [[hoarded, checking_out]],
    )
    assert attempts == [(hoarded, "canceled", "order_expired"), (checking_out, "open", None)]


def test_max_age_comes_from_the_argument_else_the_setting(db: Session) -> None:
    user = new_user(db.conn)
    product = new_product(db.conn, stock=100)

    def checking_out(minutes: int) -> int:
        order = new_order(db.conn, user, [(product, 1)])
        attach(db, begin(db, order)["payment_id"])
        age(db, order, f"{minutes} minutes")
        return order

    first, second = checking_out(20), checking_out(12)
    as_dba(db)
    assert db.one("select ops.expire_unpaid_orders('30 minutes', '15 minutes')") == 1
    shop_setting(db.conn, "commercecore.order_max_unpaid_age", "10 minutes")
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 1
    db.as_superuser()
    assert (order_state(db, first), order_state(db, second)) == (("cancelled", "expired"),) * 2
    assert (
        db.one(
            "select array_agg(note order by order_id) from core.inventory_movements where order_id = any(%s)"
            " and reason = 'order_expired'",
            [[first, second]],
        )
        == ["unpaid order reached its maximum age"] * 2
    )
    as_dba(db)
    for bad in ("0 minutes", "-1 minute"):
        with db.raises("PT422") as info:
            db.one("select ops.expire_unpaid_orders('30 minutes', %s::interval)", [bad])
        assert detail(info)["field"] == "max_age"


def test_checkout_is_refused_past_the_maximum_age(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=300), 2)], age="59 minutes")
    begin(db, order)  # within the hour: a new attempt is fine
    age(db, order, "60 minutes")
    db.as_role("app_payments")
    with db.raises("PT409") as info:
        db.one("select billing.begin_payment(%s)", [order])
    found = detail(info)
    assert (found["code"], found["order_id"], found["max_age_seconds"]) == ("order_expired", order, 3600)
    assert info.value.diag.message_hint
    db.as_superuser()
    assert db.one("select count(*) from core.payments where order_id = %s", [order]) == 1


def test_a_payment_after_the_maximum_age_is_refunded(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=500), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment)
    age(db, order, "2 hours")
    as_dba(db)
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 1
    db.as_superuser()
    late = complete(db, payment, 500)
    assert (late["outcome"], late["reason"]) == ("refund_required", "order_not_pending")


# -- commercecore jobs run --max-age ---------------------------------------------------------------------


def _checkout_order(url: str, minutes: int) -> int:
    """An order with a checkout under way (a session open for half an hour), created `minutes` ago."""
    with psycopg.connect(url, autocommit=True) as conn:
        order = new_order(conn, new_user(conn), [(new_product(conn), 1)])
        with conn.transaction():
            conn.execute("set local role app_payments")
            attempt: Any = conn.execute("select billing.begin_payment(%s)", [order]).fetchone()
            conn.execute(
                "select billing.attach_checkout_session(%s, %s, 'https://pay.test', now() + %s::interval)",
                [attempt[0]["payment_id"], f"cs_test_{order}", "30 minutes"],
            )
        conn.execute(
            "update core.orders set created_at = now() - make_interval(mins => %s) where id = %s",
            [minutes, order],
        )
    return order


def _status(url: str, order: int) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select status from core.orders where id = %s", [order]).fetchone()
    assert row is not None
    return str(row[0])


def _jobs_run(url: str, *args: str, **env: str) -> dict[str, Any]:
    """`commercecore jobs run --once` as a process; the expiry job's log line."""
    environ = {k: v for k, v in os.environ.items() if k not in STRIPE_VARS and not k.startswith("ORDER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "commercecore.cli", "jobs", "run", "--once", "--db-url", url, *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    done = [e for e in events if e.get("event") == "job_done" and e.get("job") == "expire_unpaid_orders"]
    assert len(done) == 1, events
    return done[0]


@pytest.mark.parametrize(
    ("given", "seconds"), [("3600", 3600), ("90s", 90), ("60min", 3600), ("1 hour", 3600), ("2d", 172800)]
)
def test_jobs_run_max_age_forms(fresh_db: str, given: str, seconds: int) -> None:
    older, younger = (
        _checkout_order(fresh_db, seconds // 60 + 2),
        _checkout_order(fresh_db, seconds // 60 - 1),
    )
    done = _jobs_run(fresh_db, "--ttl", "30min", "--max-age", given)
    assert (done["expired"], done["max_age_seconds"]) == (1, seconds)
    assert (_status(fresh_db, older), _status(fresh_db, younger)) == ("cancelled", "pending")


def test_jobs_run_reads_order_max_unpaid_age(fresh_db: str) -> None:
    order = _checkout_order(fresh_db, 40)
    done = _jobs_run(fresh_db, "--ttl", "30min", ORDER_MAX_UNPAID_AGE="45min")
    assert (done["expired"], done["max_age_seconds"]) == (0, 2700)
    done = _jobs_run(fresh_db, "--ttl", "30min", ORDER_MAX_UNPAID_AGE="35min")
    assert (done["expired"], done["max_age_seconds"]) == (1, 2100)
    assert _status(fresh_db, order) == "cancelled"


def test_a_bad_max_age_is_one_line(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("jobs", "run", "--once", "--max-age", "soon", "--db-url", fresh_db)
    assert result.exit_code != 0
    assert "'soon' is not a duration" in result.output
    result = cli("jobs", "run", "--once", "--max-age", "0", "--db-url", fresh_db)
    assert result.exit_code == 1
    assert "must be positive" in error_line(result)
    monkeypatch.setenv("ORDER_MAX_UNPAID_AGE", "never")
    result = cli("jobs", "run", "--once", "--db-url", fresh_db)
    assert result.exit_code == 1
    assert "ORDER_MAX_UNPAID_AGE='never' is not a duration" in error_line(result)
