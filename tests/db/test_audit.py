"""The audit trail as its readers see it: the owner (app_owner, superusers) reads audit.log in full; app_dba
reads the same rows with emails and Stripe ids masked as api.v_payments_safe masks them, and cannot reach
the table that holds them in full."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Session

SESSION_ID = "cs_test_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1v2w3x4y5z6A7b8C9d1a2b"
INTENT_ID = "pi_3NxyzAbCdEfGh9876"
CHECKOUT_URL = f"https://checkout.stripe.com/c/pay/{SESSION_ID}#fidkdWxOYHwnPyd1blpxYHZxWjA0"


def audited_payment(db: Session, email: str) -> tuple[int, int]:
    """A customer, an order and a payment attempt with its Stripe ids, written as the jobs and the
    billing functions would write them (each write audited); the user's and the payment's ids."""
    user_id = db.one("insert into core.users (email) values (%s) returning id", [email])
    db.conn.execute("select set_config('request.id', 'req-audit-mask', true)")
    order_id = db.one(
        "insert into core.orders (user_id, currency, total_minor) values (%s, 'EUR', 1200) returning id",
        [user_id],
    )
    payment_id = db.one(
        "insert into core.payments (order_id, user_id, attempt, amount_minor, currency)"
        " values (%s, %s, 1, 1200, 'EUR') returning id",
        [order_id, user_id],
    )
    db.conn.execute(
        "update core.payments set status = 'open', checkout_session_id = %s, checkout_url = %s,"
        " payment_intent_id = %s where id = %s",
        [SESSION_ID, CHECKOUT_URL, INTENT_ID, payment_id],
    )
    return user_id, payment_id


def entries(db: Session, table: str, row_id: int) -> list[dict[str, Any]]:
    rows = db.all(
        "select operation, old_row, new_row, changed_columns from audit.log"
        " where table_name = %s and row_id = %s order by id",
        [table, str(row_id)],
    )
    return [
        {"operation": op, "old_row": old, "new_row": new, "changed": changed}
        for op, old, new, changed in rows
    ]


def test_app_dba_reads_emails_and_stripe_ids_masked(db: Session) -> None:
    email = f"john.{uuid.uuid4().hex[:8]}@example.com"
    user_id, payment_id = audited_payment(db, email)
    db.conn.execute("set local role app_dba")

    [user] = entries(db, "core.users", user_id)
    assert user["new_row"]["email"] == "j***@example.com"
    assert user["new_row"]["id"] == user_id  # the rest of the row as it is

    inserted, opened = entries(db, "core.payments", payment_id)
    assert inserted["new_row"]["checkout_session_id"] is None
    row = opened["new_row"]
    assert row["checkout_session_id"] == "cs_…1a2b"
    assert row["payment_intent_id"] == "pi_…9876"
    assert row["checkout_url"] == "https://checkout.stripe.com/c/pay/cs_…1a2b#fidkdWxOYHwnPyd1blpxYHZxWjA0"
    assert (row["status"], row["amount_minor"], row["currency"]) == ("open", 1200, "EUR")
    assert opened["changed"] == ["checkout_session_id", "checkout_url", "payment_intent_id", "status"]

    # the masks are v_payments_safe's own
    text = db.one(
        "select concat_ws(' ', old_row, new_row) from audit.log where request_id = 'req-audit-mask'"
    )
    assert SESSION_ID not in text
    assert INTENT_ID not in text
    assert email not in text
    safe = db.all(
        "select checkout_session_id, payment_intent_id, customer_email from api.v_payments_safe"
        " where id = %s",
        [payment_id],
    )
    assert safe == [(row["checkout_session_id"], row["payment_intent_id"], user["new_row"]["email"])]


@pytest.mark.parametrize("reader", ["app_owner", None])
def test_the_owner_and_superusers_read_the_rows_in_full(db: Session, reader: str | None) -> None:
    email = f"ann.{uuid.uuid4().hex[:8]}@example.com"
    user_id, payment_id = audited_payment(db, email)
    if reader:
        db.conn.execute(f"set local role {reader}")
    [user] = entries(db, "core.users", user_id)
    assert user["new_row"]["email"] == email
    opened = entries(db, "core.payments", payment_id)[-1]["new_row"]
    assert (opened["checkout_session_id"], opened["payment_intent_id"], opened["checkout_url"]) == (
        SESSION_ID,
        INTENT_ID,
        CHECKOUT_URL,
    )


def test_a_change_shows_even_when_the_masks_are_alike(db: Session) -> None:
    """john@ and jane@ mask alike (j***@example.com): the changed fields come from the rows in full."""
    user_id = db.one(
        "insert into core.users (email) values (%s) returning id", [f"john{uuid.uuid4().hex[:6]}@example.com"]
    )
    db.conn.execute(
        "update core.users set email = %s where id = %s", [f"jane{uuid.uuid4().hex[:6]}@example.com", user_id]
    )
    db.conn.execute("set local role app_dba")
    update = entries(db, "core.users", user_id)[-1]
    assert update["old_row"]["email"] == update["new_row"]["email"] == "j***@example.com"
    assert "email" in update["changed"]


def test_app_dba_cannot_reach_the_rows_in_full(db: Session) -> None:
    """From the catalog: app_dba reads audit.log and executes its mask, and holds nothing on the table (not
    one column); the table is the owner's."""
    privileges = db.all(
        """
        select
          has_table_privilege('app_dba', 'audit.log', 'select'),
          has_function_privilege('app_dba', 'audit.mask_row(jsonb)', 'execute'),
          has_any_column_privilege('app_dba', 'audit.log_entries', 'select'),
          has_table_privilege('app_dba', 'audit.log_entries', 'insert, update, delete, truncate'),
          pg_get_userbyid(c.relowner)
        from pg_class as c where c.oid = 'audit.log_entries'::regclass
        """
    )
    assert privileges == [(True, True, False, False, "app_owner")]
    db.conn.execute("set local role app_dba")
    with db.raises("42501"):
        db.conn.execute("select new_row from audit.log_entries limit 1")
    with db.raises("42501"):
        db.conn.execute(
            "insert into audit.log_entries (actor_role, table_name, operation, row_id)"
            " values ('x', 'x', 'INSERT', '1')"
        )
