"""The payment state machine (docs/http-api.md section 11): forward-only attempts, the pay-or-refund
invariant, the Stripe inbox, refunds, and the api routes over them. Run as the roles that call them
(app_payments, app_admin, customers).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import psycopg
import pytest

from gateway import db as gwdb
from tests.conftest import Session

# -- fixtures: direct inserts as the superuser (stock moves through the ledger, as in production) --


def new_user(conn: psycopg.Connection[Any], role: str = "app_readwrite") -> int:
    email = f"u{uuid.uuid4().hex[:12]}@example.com"
    row = conn.execute(
        "insert into core.users (email, full_name, role) values (%s, 'Test Customer', %s) returning id",
        [email, role],
    ).fetchone()
    assert row is not None
    return int(row[0])


def new_product(
    conn: psycopg.Connection[Any], price_minor: int = 1000, stock: int = 100, currency: str = "EUR"
) -> int:
    sku = f"T-{uuid.uuid4().hex[:12]}"
    row = conn.execute(
        "insert into core.products (sku, name, price_minor, currency) values (%s, %s, %s, %s) returning id",
        [sku, f"Product {sku}", price_minor, currency],
    ).fetchone()
    assert row is not None
    product_id = int(row[0])
    if stock:
        conn.execute(
            "insert into core.inventory_movements (product_id, delta, reason) values (%s, %s, 'restock')",
            [product_id, stock],
        )
    return product_id


def add_item(conn: psycopg.Connection[Any], order_id: int, product_id: int, quantity: int) -> None:
    """One order line at the product's price, with its stock taken through the ledger."""
    conn.execute("select 1 from core.products where id = %s for update", [product_id])
    conn.execute(
        "insert into core.order_items (order_id, product_id, user_id, quantity, unit_price_minor) "
        "select o.id, p.id, o.user_id, %s, p.price_minor from core.orders o, core.products p "
        "where o.id = %s and p.id = %s",
        [quantity, order_id, product_id],
    )
    conn.execute(
        "insert into core.inventory_movements (product_id, delta, reason, order_id) "
        "values (%s, %s, 'order', %s)",
        [product_id, -quantity, order_id],
    )


def new_order(
    conn: psycopg.Connection[Any],
    user_id: int,
    items: Iterable[tuple[int, int]],
    *,
    currency: str = "EUR",
    age: str = "0 seconds",
) -> int:
    row = conn.execute(
        "insert into core.orders (user_id, currency, created_at) "
        "values (%s, %s, now() - %s::interval) returning id",
        [user_id, currency, age],
    ).fetchone()
    assert row is not None
    order_id = int(row[0])
    for product_id, quantity in sorted(items):
        add_item(conn, order_id, product_id, quantity)
    return order_id


def call(db: Session, query: str, *params: Any, role: str = "app_payments", claims: Any = None) -> Any:
    """One call under a request role (the gateway's way), back to the superuser afterwards."""
    db.as_role(role, claims)
    try:
        return db.one(query, list(params))
    finally:
        db.as_superuser()


def begin(db: Session, order_id: int) -> dict[str, Any]:
    return call(db, "select billing.begin_payment(%s)", order_id)


def attach(db: Session, payment_id: int, session_id: str | None = None) -> dict[str, Any]:
    session_id = session_id or f"cs_test_{uuid.uuid4().hex}"
    return call(
        db,
        "select billing.attach_checkout_session(%s, %s, %s, now() + interval '30 minutes')",
        payment_id,
        session_id,
        f"https://checkout.stripe.test/c/pay/{session_id}",
    )


def complete(db: Session, payment_id: int, amount: int, currency: str = "EUR") -> dict[str, Any]:
    return call(
        db,
        "select billing.mark_payment_completed(%s, %s, %s, %s)",
        payment_id,
        amount,
        currency,
        f"pi_{payment_id}x",
    )


def paid_order(db: Session, price: int = 2500, quantity: int = 2) -> tuple[int, int, int]:
    """An order paid by its first attempt: (user id, order id, payment id)."""
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=price), quantity)])
    payment = begin(db, order)
    attach(db, payment["payment_id"])
    assert complete(db, payment["payment_id"], price * quantity)["outcome"] == "paid"
    return user, order, payment["payment_id"]


def order_row(db: Session, order_id: int) -> tuple[Any, ...]:
    rows = db.all(
        "select status, total_minor, refunded_minor, paid_at is not null from core.orders where id = %s",
        [order_id],
    )
    return rows[0]


def payment_row(db: Session, payment_id: int) -> tuple[Any, ...]:
    rows = db.all(
        "select status, applied, refund_required, refund_reason, refunded_minor "
        "from core.payments where id = %s",
        [payment_id],
    )
    return rows[0]


# -- privileges -------------------------------------------------------------------------------------------

BILLING_ENTRY_POINTS = {
    "begin_payment(bigint)",
    "attach_checkout_session(bigint,text,text,timestamp with time zone)",
    "mark_payment_completed(bigint,bigint,text,text,text)",
    "mark_payment_failed(bigint,text)",
    "mark_payment_expired(bigint)",
    "mark_payment_canceled(bigint,text)",
    "record_stripe_event(text,text,jsonb,timestamp with time zone,boolean)",
    "finish_stripe_event(text,text,bigint)",
    "deferred_refund_events(text)",
    "find_payment(text,text,bigint)",
    "stale_payments(interval)",
    "request_refund(bigint,bigint,text,bigint)",
    "pending_refunds()",
    "attach_refund(bigint,text)",
    "mark_refund_succeeded(text,bigint,text)",
    "mark_refund_failed(text,text,bigint)",
}


def test_billing_is_for_app_payments_only(db: Session) -> None:
    rows = db.all(
        """
        select p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')', p.prosecdef,
          has_function_privilege('app_payments', p.oid, 'execute'),
          has_function_privilege('app_readwrite', p.oid, 'execute')
            or has_function_privilege('app_admin', p.oid, 'execute')
            or has_function_privilege('app_readonly', p.oid, 'execute')
            or has_function_privilege('app_dba', p.oid, 'execute')
            or has_function_privilege('public', p.oid, 'execute'),
          pg_catalog.pg_get_userbyid(p.proowner),
          'search_path=pg_catalog, pg_temp' = any(p.proconfig)
        from pg_catalog.pg_proc p where p.pronamespace = 'billing'::regnamespace
        """
    )
    callable_by_payments = {name.replace(", ", ",") for name, _, payments, _, _, _ in rows if payments}
    assert callable_by_payments == BILLING_ENTRY_POINTS
    for name, definer, payments, others, owner, pinned in rows:
        assert not others, name
        assert owner == "app_owner", name
        assert pinned, name
        assert definer == payments, name  # entry points are definers; internal helpers run inside them


def test_customers_cannot_reach_billing(db: Session) -> None:
    db.as_role("app_readwrite", db.claims(1))
    with db.raises("42501"):
        db.conn.execute("select billing.find_payment(payment_id => 1)")
    db.as_role("app_admin", db.claims(1, "app_admin"))
    with db.raises("42501"):
        db.conn.execute("select billing.mark_payment_completed(1, 100, 'EUR')")


# -- checkout ---------------------------------------------------------------------------------------------


def test_begin_payment_snapshots_the_order_and_lists_older_open_attempts(db: Session) -> None:
    user = new_user(db.conn)
    cheap, dear = new_product(db.conn, price_minor=300), new_product(db.conn, price_minor=1250)
    order = new_order(db.conn, user, [(cheap, 3), (dear, 1)])

    first = begin(db, order)
    assert first["attempt"] == 1
    assert (first["amount_minor"], first["currency"], first["previous_open"]) == (2150, "EUR", [])
    assert [(i["product_id"], i["quantity"], i["unit_price_minor"]) for i in first["items"]] == [
        (cheap, 3, 300),
        (dear, 1, 1250),
    ]
    assert all(i["name"].startswith("Product T-") for i in first["items"])
    opened = attach(db, first["payment_id"], "cs_test_first")
    assert (opened["status"], opened["changed"]) == ("open", True)

    second = begin(db, order)
    assert second["attempt"] == 2
    assert second["previous_open"] == [
        {
            "payment_id": first["payment_id"],
            "attempt": 1,
            "status": "open",
            "checkout_session_id": "cs_test_first",
        }
    ]
    # older attempts are left to the gateway, which expires them at Stripe first
    assert payment_row(db, first["payment_id"])[0] == "open"


def test_begin_payment_refuses_missing_foreign_empty_and_closed_orders(db: Session) -> None:
    owner, stranger = new_user(db.conn), new_user(db.conn)
    product = new_product(db.conn)
    db.as_role("app_payments")
    with db.raises("PT404") as missing:
        db.conn.execute("select billing.begin_payment(-1)")
    assert missing.value.diag.message_detail is not None
    assert '"code": "not_found"' in missing.value.diag.message_detail

    db.as_superuser()
    empty = new_order(db.conn, owner, [])
    db.as_role("app_payments")
    with db.raises("PT409") as nothing:
        db.conn.execute("select billing.begin_payment(%s)", [empty])
    assert '"code": "order_empty"' in (nothing.value.diag.message_detail or "")

    db.as_superuser()
    order = new_order(db.conn, owner, [(product, 1)])
    # a checkout carrying another customer's claims finds no such order
    db.as_role("app_payments", db.claims(stranger))
    with db.raises("PT404"):
        db.conn.execute("select billing.begin_payment(%s)", [order])
    db.as_role("app_payments", db.claims(owner))
    assert db.one("select billing.begin_payment(%s) ->> 'attempt'", [order]) == "1"

    db.as_superuser()
    db.conn.execute(
        "update core.orders set status = 'cancelled', cancelled_at = now(), cancel_reason = 'customer' "
        "where id = %s",
        [order],
    )
    db.as_role("app_payments")
    with db.raises("PT409") as closed:
        db.conn.execute("select billing.begin_payment(%s)", [order])
    assert '"code": "order_not_payable"' in (closed.value.diag.message_detail or "")


def test_attach_checkout_session_is_idempotent_and_refuses_another_session(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn), 1)])
    payment = begin(db, order)["payment_id"]
    assert attach(db, payment, "cs_test_one")["changed"] is True
    assert attach(db, payment, "cs_test_one")["changed"] is False
    db.as_role("app_payments")
    with db.raises("PT409") as other:
        db.conn.execute(
            "select billing.attach_checkout_session(%s, 'cs_test_two', 'https://x.test', now())", [payment]
        )
    assert '"code": "checkout_session_conflict"' in (other.value.diag.message_detail or "")
    db.as_superuser()
    assert db.one("select checkout_session_id from core.payments where id = %s", [payment]) == "cs_test_one"


def test_a_success_pays_the_order_once(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=1999), 2)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment)

    first = complete(db, payment, 3998)
    assert (first["outcome"], first["changed"], first["previous_status"], first["order_status"]) == (
        "paid",
        True,
        "open",
        "paid",
    )
    assert order_row(db, order) == ("paid", 3998, 0, True)
    assert payment_row(db, payment) == ("succeeded", True, False, None, 0)

    again = complete(db, payment, 3998)
    assert (again["outcome"], again["changed"]) == ("already_applied", False)
    assert db.one("select count(*) from core.refunds where payment_id = %s", [payment]) == 0


def test_duplicate_stripe_events_are_no_ops(db: Session) -> None:
    event = f"evt_{uuid.uuid4().hex}"
    payload = '{"id": "x", "livemode": false, "created": 1764000000}'
    assert (
        call(db, "select billing.record_stripe_event(%s, 'checkout.session.completed', %s)", event, payload)
        == "new"
    )
    assert (
        call(db, "select billing.record_stripe_event(%s, 'checkout.session.completed', %s)", event, payload)
        == "duplicate"
    )
    call(db, "select billing.finish_stripe_event(%s, 'paid')", event)
    assert db.all(
        "select count(*), bool_and(processed_at is not null), min(outcome) "
        "from core.stripe_events where id = %s",
        [event],
    ) == [(1, True, "paid")]
    db.as_role("app_payments")
    with db.raises("PT422"):
        db.conn.execute("select billing.record_stripe_event('not-an-event', 'x', '{}')")
    with db.raises("PT404"):
        db.conn.execute("select billing.finish_stripe_event('evt_unknown', 'x')")


@pytest.mark.parametrize(("key_livemode", "event_livemode"), [(False, True), (True, False)])
def test_events_of_the_other_mode_are_kept_as_rejected(
    db: Session, key_livemode: bool, event_livemode: bool
) -> None:
    """A live event at a shop on a test key (or the reverse) is stored, finished as rejected with its
    reason, and reported so: the caller acknowledges it and applies nothing. The same event again is a
    duplicate; an event of the key's own mode is new."""
    event = f"evt_{uuid.uuid4().hex}"
    payload = json.dumps({"id": event, "livemode": event_livemode, "created": 1764000000})
    record = "select billing.record_stripe_event(%s, 'checkout.session.completed', %s, null, %s)"
    assert call(db, record, event, payload, key_livemode) == "rejected:livemode_mismatch"
    stored = (
        "select livemode, processed_at is not null, outcome, payment_id from core.stripe_events where id = %s"
    )
    assert db.all(stored, [event]) == [(event_livemode, True, "rejected:livemode_mismatch", None)]
    assert call(db, record, event, payload, key_livemode) == "duplicate"
    same_mode = f"evt_{uuid.uuid4().hex}"
    payload = json.dumps({"id": same_mode, "livemode": key_livemode, "created": 1764000000})
    assert call(db, record, same_mode, payload, key_livemode) == "new"
    assert db.one("select outcome from core.stripe_events where id = %s", [same_mode]) is None


def test_late_events_after_a_success_change_nothing(db: Session) -> None:
    _, order, payment = paid_order(db)
    for query in (
        "select billing.mark_payment_expired(%s)",
        "select billing.mark_payment_failed(%s, 'card_declined')",
        "select billing.mark_payment_canceled(%s, 'superseded')",
    ):
        late = call(db, query, payment)
        assert (late["outcome"], late["changed"], late["status"]) == ("unchanged", False, "succeeded")
    assert payment_row(db, payment)[:2] == ("succeeded", True)
    assert order_row(db, order)[0] == "paid"


def test_failed_expired_and_canceled_are_forward_only(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment)
    failed = call(db, "select billing.mark_payment_failed(%s, 'card_declined')", payment)
    assert (failed["outcome"], failed["status"], failed["failure_reason"]) == (
        "failed",
        "failed",
        "card_declined",
    )
    expired = call(db, "select billing.mark_payment_expired(%s)", payment)
    assert (expired["outcome"], expired["status"]) == ("unchanged", "failed")


def test_the_expiry_of_a_superseded_attempt_cancels_it_as_the_gateway_would(db: Session) -> None:
    # the gateway commits attempt 2, expires attempt 1's session at Stripe, then cancels attempt 1: the
    # session's expiry event can arrive between the last two steps, and must end attempt 1 the same way
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn), 1)])
    first = begin(db, order)["payment_id"]
    attach(db, first)
    second = begin(db, order)["payment_id"]
    expired = call(db, "select billing.mark_payment_expired(%s)", first)
    assert (expired["outcome"], expired["status"], expired["failure_reason"]) == (
        "canceled",
        "canceled",
        "superseded by attempt 2",
    )
    canceled = call(db, "select billing.mark_payment_canceled(%s, 'superseded by attempt 2')", first)
    assert (canceled["outcome"], canceled["status"]) == ("unchanged", "canceled")
    # the newest attempt's own expiry is an expiry
    attach(db, second)
    assert call(db, "select billing.mark_payment_expired(%s)", second)["status"] == "expired"


def test_success_on_a_superseded_attempt_is_refunded_not_applied(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=700), 1)])
    old = begin(db, order)["payment_id"]
    attach(db, old)
    new = begin(db, order)["payment_id"]

    late = complete(db, old, 700)
    assert (late["outcome"], late["reason"], late["applied"], late["refund_required"]) == (
        "refund_required",
        "superseded",
        False,
        True,
    )
    assert late["refund"]["amount_minor"] == 700
    assert re.fullmatch(rf"cc_refund_{old}_1_[0-9a-f]{{16}}", late["refund"]["idempotency_key"])
    assert order_row(db, order)[0] == "pending"
    assert payment_row(db, old) == ("succeeded", False, True, "superseded", 0)
    # the duplicate of that success changes nothing and creates no second refund
    assert complete(db, old, 700)["outcome"] == "already_recorded"
    assert db.one("select count(*) from core.refunds where payment_id = %s", [old]) == 1

    assert complete(db, new, 700)["outcome"] == "paid"
    assert order_row(db, order)[0] == "paid"


def test_success_when_the_order_was_already_paid_is_refunded(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=900), 1)])
    first = begin(db, order)["payment_id"]
    second = begin(db, order)["payment_id"]
    assert complete(db, second, 900)["outcome"] == "paid"

    late = complete(db, first, 900)
    # the older attempt is named superseded whichever success came first (the same reason as before
    # the order was paid), so replays in any order end in the same books
    assert (late["outcome"], late["reason"], late["order_status"]) == (
        "refund_required",
        "superseded",
        "paid",
    )
    assert db.one("select count(*) from core.payments where order_id = %s and applied", [order]) == 1
    assert db.one("select paid_at is not null from core.orders where id = %s", [order]) is True


def test_success_for_an_order_changed_after_checkout_began_is_refunded(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=1000), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment)
    add_item(db.conn, order, new_product(db.conn, price_minor=500), 1)  # the customer added a line meanwhile

    late = complete(db, payment, 1000)
    assert (late["outcome"], late["reason"]) == ("refund_required", "amount_mismatch")
    assert order_row(db, order)[:2] == ("pending", 1500)

    other = new_order(db.conn, user, [(new_product(db.conn, price_minor=400), 1)])
    attempt = begin(db, other)["payment_id"]
    assert complete(db, attempt, 400, "USD")["reason"] == "currency_mismatch"
    assert order_row(db, other)[0] == "pending"


def test_success_for_a_cancelled_order_is_refunded(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=1200), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment)
    db.conn.execute(
        "update core.orders set status = 'cancelled', cancelled_at = now(), cancel_reason = 'customer' "
        "where id = %s",
        [order],
    )
    late = complete(db, payment, 1200)
    assert (late["outcome"], late["reason"]) == ("refund_required", "order_not_pending")
    assert order_row(db, order)[0] == "cancelled"
    assert db.one("select status from core.refunds where payment_id = %s", [payment]) == "pending"


def test_success_on_an_expired_attempt_is_recorded_and_refunded(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=800), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment)
    call(db, "select billing.mark_payment_expired(%s)", payment)
    late = complete(db, payment, 800)
    assert (late["outcome"], late["previous_status"], late["status"]) == (
        "refund_required",
        "expired",
        "succeeded",
    )
    assert order_row(db, order)[0] == "pending"


def test_completion_for_another_session_is_refused(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment, "cs_test_mine")
    db.as_role("app_payments")
    with db.raises("PT409"):
        db.conn.execute(
            "select billing.mark_payment_completed(%s, 1000, 'EUR', checkout_session_id => 'cs_test_other')",
            [payment],
        )
    with db.raises("PT404"):
        db.conn.execute("select billing.mark_payment_completed(-5, 1000, 'EUR')")
    with db.raises("PT422"):
        db.conn.execute("select billing.mark_payment_completed(%s, -1, 'EUR')", [payment])


def test_find_payment_and_stale_payments(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment, f"cs_test_find{payment}")
    by_session = call(db, "select billing.find_payment(checkout_session_id => %s)", f"cs_test_find{payment}")
    assert (by_session["payment_id"], by_session["status"]) == (payment, "open")
    assert call(db, "select billing.find_payment(payment_id => %s) ->> 'order_id'", payment) == str(order)
    assert call(db, "select billing.find_payment(payment_intent_id => 'pi_nobody') is null") is True

    db.conn.execute(
        "update core.payments set created_at = now() - interval '2 hours' where id = %s", [payment]
    )
    db.as_role("app_payments")
    stale = [row[0] for row in db.all("select payment_id from billing.stale_payments('1 hour')")]
    fresh = [row[0] for row in db.all("select payment_id from billing.stale_payments('3 hours')")]
    assert payment in stale
    assert payment not in fresh


# -- refunds ----------------------------------------------------------------------------------------------


def test_partial_then_full_refund_refunds_the_order(db: Session) -> None:
    _, order, payment = paid_order(db, price=2500, quantity=2)  # 5000
    staff = new_user(db.conn, "app_admin")

    requested = call(
        db, "select api.refund_order(%s, 2000)", order, role="app_admin", claims=db.claims(staff, "app_admin")
    )
    assert (requested["status"], requested["amount_minor"], requested["requested_by"]) == (
        "pending",
        2000,
        staff,
    )
    assert re.fullmatch(rf"cc_refund_{payment}_1_[0-9a-f]{{16}}", requested["idempotency_key"])
    assert requested["refundable_minor"] == 3000
    attached = call(db, "select billing.attach_refund(%s, 're_partial')", requested["refund_id"])
    assert attached["changed"] is True
    assert (
        call(db, "select billing.attach_refund(%s, 're_partial')", requested["refund_id"])["changed"] is False
    )

    done = call(db, "select billing.mark_refund_succeeded('re_partial', 2000)")
    assert (done["outcome"], done["payment_status"], done["order_status"]) == (
        "succeeded",
        "succeeded",
        "paid",
    )
    assert (
        call(db, "select billing.mark_refund_succeeded('re_partial', 2000)")["outcome"] == "already_succeeded"
    )
    assert order_row(db, order) == ("paid", 5000, 2000, True)
    assert payment_row(db, payment)[0::4] == ("succeeded", 2000)

    rest = call(db, "select billing.request_refund(%s)", payment)
    assert rest["amount_minor"] == 3000
    assert re.fullmatch(rf"cc_refund_{payment}_2_[0-9a-f]{{16}}", rest["idempotency_key"])
    # while the rest is pending at Stripe, nothing more can be asked for
    db.as_role("app_payments")
    with db.raises("PT409"):
        db.conn.execute("select billing.request_refund(%s, 1)", [payment])
    db.as_superuser()
    call(db, "select billing.attach_refund(%s, 're_rest')", rest["refund_id"])
    final = call(db, "select billing.mark_refund_succeeded('re_rest', 3000)")
    assert (final["payment_status"], final["order_status"]) == ("refunded", "refunded")
    assert order_row(db, order) == ("refunded", 5000, 5000, True)
    assert payment_row(db, payment) == ("refunded", True, False, None, 5000)
    db.as_role("app_admin", db.claims(staff, "app_admin"))
    with db.raises("PT409"):
        db.conn.execute("select api.refund_order(%s)", [order])


def test_over_refund_is_refused(db: Session) -> None:
    _, order, payment = paid_order(db, price=1000, quantity=1)
    db.as_role("app_payments")
    with db.raises("PT409") as over:
        db.conn.execute("select billing.request_refund(%s, 1001)", [payment])
    assert '"code": "refund_exceeds_balance"' in (over.value.diag.message_detail or "")
    assert '"refundable": 1000' in (over.value.diag.message_detail or "")
    with db.raises("PT422"):
        db.conn.execute("select billing.request_refund(%s, 0)", [payment])
    db.as_role("app_admin", db.claims(1, "app_admin"))
    with db.raises("PT409"):
        db.conn.execute("select api.refund_order(%s, 5000)", [order])
    db.as_superuser()
    assert db.one("select count(*) from core.refunds where payment_id = %s", [payment]) == 0


def test_a_failed_refund_frees_its_amount(db: Session) -> None:
    _, _, payment = paid_order(db, price=1000, quantity=1)
    refund = call(db, "select billing.request_refund(%s)", payment)
    failed = call(db, "select billing.mark_refund_failed(null, 'stripe refused', %s)", refund["refund_id"])
    assert (failed["outcome"], failed["status"]) == ("failed", "failed")
    assert (
        call(db, "select billing.mark_refund_failed(null, 'again', %s)", refund["refund_id"])["outcome"]
        == "unchanged"
    )
    assert call(db, "select billing.request_refund(%s) ->> 'amount_minor'", payment) == "1000"


def test_pending_refunds_include_the_automatic_ones(db: Session) -> None:
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=650), 1)])
    old = begin(db, order)["payment_id"]
    begin(db, order)
    complete(db, old, 650)
    # a flagged payment whose refund row is missing (say, written before this change) gets one
    db.conn.execute("delete from core.refunds where payment_id = %s", [old])
    db.as_role("app_payments")
    rows = db.all(
        "select payment_id, amount_minor, reason, idempotency_key, stripe_refund_id, payment_intent_id "
        "from billing.pending_refunds() where payment_id = %s",
        [old],
    )
    [(payment_id, amount, reason, key, stripe_refund_id, intent)] = rows
    assert (payment_id, amount, reason, stripe_refund_id, intent) == (
        old,
        650,
        "superseded",
        None,
        f"pi_{old}x",
    )
    assert re.fullmatch(rf"cc_refund_{old}_1_[0-9a-f]{{16}}", key)
    # listed again, not created again
    assert db.one("select count(*) from billing.pending_refunds() where payment_id = %s", [old]) == 1
    db.as_superuser()
    assert db.one("select count(*) from core.refunds where payment_id = %s", [old]) == 1


def test_a_refund_made_at_stripe_directly_is_recorded(db: Session) -> None:
    _, order, payment = paid_order(db, price=1000, quantity=1)
    external = call(db, "select billing.mark_refund_succeeded('re_dashboard', 400, %s)", f"pi_{payment}x")
    assert (external["outcome"], external["previous_status"], external["amount_minor"]) == (
        "succeeded",
        "external",
        400,
    )
    assert order_row(db, order)[:3] == ("paid", 1000, 400)
    db.as_role("app_payments")
    with db.raises("PT404"):
        db.conn.execute("select billing.mark_refund_succeeded('re_unknown', 100)")


# -- the api routes ---------------------------------------------------------------------------------------


def test_order_payments_shows_own_attempts_only(db: Session) -> None:
    owner, stranger = new_user(db.conn), new_user(db.conn)
    order = new_order(db.conn, owner, [(new_product(db.conn, price_minor=300), 1)])
    first = begin(db, order)["payment_id"]
    attach(db, first, f"cs_test_list{first}")

    db.as_role("app_readwrite", db.claims(owner))
    listed = db.one("select api.order_payments(%s)", [order])
    assert [(p["id"], p["status"], p["amount_minor"], p["currency"]) for p in listed] == [
        (first, "open", 300, "EUR")
    ]
    assert listed[0]["checkout_url"].endswith(f"cs_test_list{first}")
    assert set(listed[0]) >= {
        "id",
        "order_id",
        "status",
        "amount_minor",
        "currency",
        "checkout_url",
        "created_at",
    }

    db.as_role("app_readwrite", db.claims(stranger))
    with db.raises("PT404") as foreign:
        db.conn.execute("select api.order_payments(%s)", [order])
    with db.raises("PT404") as missing:
        db.conn.execute("select api.order_payments(-1)")
    assert foreign.value.diag.message_primary == f"Order {order} does not exist."
    assert missing.value.diag.sqlstate == foreign.value.diag.sqlstate

    db.as_superuser()
    complete(db, first, 300)
    db.as_role("app_admin", db.claims(stranger, "app_admin"))
    after = db.one("select api.order_payments(%s)", [order])
    assert (after[0]["status"], after[0]["checkout_url"]) == ("succeeded", None)
    assert (
        db.one("select has_function_privilege('app_readonly', 'api.order_payments(bigint)', 'execute')")
        is False
    )


def test_refund_order_is_for_staff(db: Session) -> None:
    user, order, _ = paid_order(db)
    db.as_role("app_readwrite", db.claims(user))
    with db.raises("42501"):
        db.conn.execute("select api.refund_order(%s)", [order])
    db.as_superuser()
    pending = new_order(db.conn, user, [(new_product(db.conn), 1)])
    db.as_role("app_admin", db.claims(user, "app_admin"))
    with db.raises("PT409") as unpaid:
        db.conn.execute("select api.refund_order(%s)", [pending])
    assert '"code": "order_not_refundable"' in (unpaid.value.diag.message_detail or "")
    with db.raises("PT404"):
        db.conn.execute("select api.refund_order(-1)")
    assert db.one("select (api.refund_order(%s) ->> 'amount_minor')::bigint", [order]) == 5000
    assert db.one("select current_setting('response.status', true)") == "202"
    routes = db.all(
        "select obj_description(p.oid, 'pg_proc') from pg_proc p "
        "where p.oid in ('api.refund_order(bigint, bigint, text)'::regprocedure, "
        "'api.order_payments(bigint)'::regprocedure) "
        "order by p.proname"
    )
    assert "@route GET /orders/{order_id}/payments" in routes[0][0]
    # the refund needs Stripe: the gateway's Python route is its one declaration
    # (tests/gateway/test_routes_once.py)
    assert "@route" not in routes[1][0]


def test_payments_safe_masks_provider_ids_and_emails(db: Session) -> None:
    user = new_user(db.conn)
    db.conn.execute("update core.users set email = 'jane.doe@example.com' where id = %s", [user])
    order = new_order(db.conn, user, [(new_product(db.conn), 1)])
    payment = begin(db, order)["payment_id"]
    attach(db, payment, "cs_test_a1B2c3D4e5F6g7H81a2b")
    call(db, "select billing.mark_payment_completed(%s, 1000, 'EUR', 'pi_3Nabcdefgh9z8y')", payment)

    db.as_role("app_admin", db.claims(user, "app_admin"))
    row = db.all(
        "select checkout_session_id, payment_intent_id, customer_email, status, amount_minor "
        "from api.v_payments_safe where id = %s",
        [payment],
    )
    assert row == [("cs_…1a2b", "pi_…9z8y", "j***@example.com", "succeeded", 1000)]
    columns = {
        c
        for (c,) in db.all(
            "select column_name from information_schema.columns where table_name = 'v_payments_safe'"
        )
    }
    assert "checkout_url" not in columns

    db.as_superuser()
    db.conn.execute("set local role app_dba")
    assert db.one("select count(*) from api.v_payments_safe where id = %s", [payment]) == 1
    db.as_role("app_readwrite", db.claims(user))
    with db.raises("42501"):
        db.conn.execute("select * from api.v_payments_safe")


# -- concurrency ------------------------------------------------------------------------------------------


def _in_threads(url: str, count: int, query: str, params: list[Any]) -> list[Any]:
    """Runs the same call in `count` connections at once, as app_payments; the results, in any order."""
    barrier = threading.Barrier(count, timeout=30)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with psycopg.connect(url) as conn:
                query_ctx, ctx_params = gwdb.request_context(
                    "app_payments", {}, {"app_payments": {"lock_timeout": "20s"}}
                )
                with conn.transaction():
                    conn.execute(query_ctx, ctx_params)
                    barrier.wait()
                    row = conn.execute(query, params).fetchone()
                with lock:
                    results.append(row[0] if row else None)
        except BaseException as exc:  # reported by the test below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == count
    return results


def test_parallel_deliveries_apply_exactly_once(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        user = new_user(conn)
        order = new_order(conn, user, [(new_product(conn, price_minor=1500), 2)])
        payment = conn.execute(
            "select (billing.begin_payment(%s) ->> 'payment_id')::bigint", [order]
        ).fetchone()
        assert payment is not None
        payment_id = payment[0]
        conn.execute(
            "select billing.attach_checkout_session("
            "%s, 'cs_test_race', 'https://x.test', now() + interval '1 hour')",
            [payment_id],
        )

    events = _in_threads(
        fresh_db,
        8,
        "select billing.record_stripe_event('evt_race_1', 'checkout.session.completed', '{}')",
        [],
    )
    assert Counter(events) == {"new": 1, "duplicate": 7}

    outcomes = _in_threads(
        fresh_db,
        20,
        "select billing.mark_payment_completed(%s, 3000, 'EUR', 'pi_race') ->> 'outcome'",
        [payment_id],
    )
    assert Counter(outcomes) == {"paid": 1, "already_applied": 19}

    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "select count(*) filter (where applied), count(*) filter (where status = 'succeeded'), "
            "(select status from core.orders where id = %s), "
            "(select count(*) from core.refunds r join core.payments p on p.id = r.payment_id "
            "where p.order_id = %s) "
            "from core.payments where order_id = %s",
            [order, order, order],
        ).fetchone()
    assert rows == (1, 1, "paid", 0)


@pytest.mark.parametrize("count", [6])
def test_parallel_begin_payment_numbers_attempts_uniquely(fresh_db: str, count: int) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        user = new_user(conn)
        order = new_order(conn, user, [(new_product(conn), 1)])
    attempts = _in_threads(fresh_db, count, "select (billing.begin_payment(%s) ->> 'attempt')::int", [order])
    assert sorted(attempts) == list(range(1, count + 1))
