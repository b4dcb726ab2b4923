"""The error helpers of procedures/errors (core.raise_error, raise_not_found, raise_invalid): the SQLSTATE,
message, detail and hint they raise, which the gateway turns into the HTTP answer, and that only their
owner may call them."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.conftest import Session


def error(info: pytest.ExceptionInfo[psycopg.Error]) -> tuple[str | None, str | None, Any, str | None]:
    diag = info.value.diag
    return (
        info.value.sqlstate,
        diag.message_primary,
        json.loads(diag.message_detail) if diag.message_detail is not None else None,
        diag.message_hint,
    )


def test_raise_error_builds_the_api_error(db: Session) -> None:
    with db.raises("PT409") as info:
        db.conn.execute(
            "select core.raise_error('409', 'order_not_editable', 'The order is paid.', %s, 'Only pending.')",
            ['{"order_id": 7, "status": "paid"}'],
        )
    assert error(info) == (
        "PT409",
        "The order is paid.",
        {"code": "order_not_editable", "order_id": 7, "status": "paid"},
        "Only pending.",
    )


def test_raise_error_without_details_or_hint(db: Session) -> None:
    with db.raises("PT403") as info:
        db.conn.execute("select core.raise_error('403', 'forbidden', 'Only staff.')")
    assert error(info) == ("PT403", "Only staff.", {"code": "forbidden"}, None)
    with db.raises("PT401") as info:
        db.conn.execute("select core.raise_error('401', 'not_authenticated', 'Sign in.', null, null)")
    assert error(info) == ("PT401", "Sign in.", {"code": "not_authenticated"}, None)


def test_the_detail_text_is_the_jsonb_text_of_the_same_object(db: Session) -> None:
    """Merging {"code": ...} with the details gives the very text a single jsonb_build_object gave."""
    with db.raises("PT422") as info:
        db.conn.execute(
            "select core.raise_invalid('quantity', 'm', jsonb_build_object('min', 1, 'max', 10000), 'h')"
        )
    expected = db.one(
        "select jsonb_build_object("
        "'code', 'invalid_input', 'field', 'quantity', 'min', 1, 'max', 10000"
        ")::text"
    )
    assert info.value.diag.message_detail == expected


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            "select core.raise_not_found('order', 42::bigint, 'List your orders with GET /orders.')",
            (
                "PT404",
                "There is no order with this id.",
                {"code": "not_found", "resource": "order", "id": 42},
                "List your orders with GET /orders.",
            ),
        ),
        (
            "select core.raise_not_found('stripe_event', 'evt_1'::text, message => 'Not in the inbox.')",
            (
                "PT404",
                "Not in the inbox.",
                {"code": "not_found", "resource": "stripe_event", "id": "evt_1"},
                None,
            ),
        ),
    ],
)
def test_raise_not_found(db: Session, call: str, expected: tuple[Any, ...]) -> None:
    with db.raises("PT404") as info:
        db.conn.execute(call)
    assert error(info) == expected


def test_raise_invalid_names_the_field(db: Session) -> None:
    with db.raises("PT422") as info:
        db.conn.execute(
            "select core.raise_invalid('kind', 'Bad kind.', jsonb_build_object('allowed', "
            "jsonb_build_array('shipping', 'billing')), 'Send shipping or billing.')"
        )
    assert error(info) == (
        "PT422",
        "Bad kind.",
        {"code": "invalid_input", "field": "kind", "allowed": ["shipping", "billing"]},
        "Send shipping or billing.",
    )
    with db.raises("PT422") as info:
        db.conn.execute("select core.raise_invalid('items', 'Bad items.', hint => 'Send an array.')")
    assert error(info) == (
        "PT422",
        "Bad items.",
        {"code": "invalid_input", "field": "items"},
        "Send an array.",
    )


@pytest.mark.parametrize("role", ["app_readonly", "app_readwrite", "app_admin", "app_payments"])
def test_request_roles_cannot_call_the_helpers(db: Session, role: str) -> None:
    db.as_role(role, db.claims(1, role))
    with db.raises("42501"):
        db.conn.execute("select core.raise_error('404', 'not_found', 'x')")
