"""Orders as a customer: create_order, modify_order, delete_product_in_order, cancel_order, get_order and
the views api.orders and api.order_items. Stock moves only through the ledger and equals its sum after
every step; totals come from database prices; idempotency keys replay; another customer's order is exactly
as missing as one that does not exist."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Session
from tests.db.shop import (
    ORDER_KEYS,
    as_customer,
    as_staff,
    check_invariants,
    detail,
    items,
    new_address,
    new_product,
    new_user,
    no_order_limits,
    response_headers,
    response_status,
    stock_of,
)

CREATE = "select api.create_order(%s::jsonb)"
CREATE_WITH = "select api.create_order(%s::jsonb, shipping_address_id => %s, idempotency_key => %s)"
MODIFY = "select api.modify_order(%s, %s, %s)"
DELETE = "select api.delete_product_in_order(%s, %s)"
CANCEL = "select api.cancel_order(%s)"
GET = "select api.get_order(%s)"


@dataclass
class Shop:
    alice: int
    bob: int
    staff: int
    lamp: int  # 1250 EUR, 10 in stock
    desk: int  # 9900 EUR, 3 in stock
    mug: int  # 450 EUR, 100 in stock
    initial: dict[int, int]

    @property
    def products(self) -> list[int]:
        return [self.lamp, self.desk, self.mug]


@pytest.fixture
def shop(db: Session) -> Shop:
    alice = new_user(db.conn, "alice@example.com")
    bob = new_user(db.conn, "bob@example.com")
    staff = new_user(db.conn, "staff@example.com", "app_admin")
    lamp = new_product(db.conn, "T-LAMP", 1250, 10)
    desk = new_product(db.conn, "T-DESK", 9900, 3)
    mug = new_product(db.conn, "T-MUG", 450, 100)
    as_customer(db, alice)
    return Shop(alice, bob, staff, lamp, desk, mug, {lamp: 10, desk: 3, mug: 100})


def invariants(db: Session, shop: Shop, user_id: int | None = None) -> None:
    """The invariants hold; then back to the customer (alice unless told)."""
    check_invariants(db.conn, shop.products, shop.initial)
    as_customer(db, user_id or shop.alice)


def ledger(db: Session, order_id: int) -> list[tuple[int, int, str]]:
    db.as_superuser()
    rows = db.all(
        "select product_id, delta, reason from core.inventory_movements where order_id = %s order by id",
        [order_id],
    )
    return [(int(p), int(d), str(r)) for p, d, r in rows]


# --- create_order ------------------------------------------------------------------------------------------


def test_create_order_takes_stock_and_prices_from_the_database(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 2), (shop.mug, 3))])
    assert set(order) >= ORDER_KEYS
    assert response_status(db.conn) == "201"
    assert response_headers(db.conn) == [{"Location": f"/orders/{order['id']}"}]
    assert (order["status"], order["currency"], order["user_id"]) == ("pending", "EUR", shop.alice)
    assert order["total_minor"] == 2 * 1250 + 3 * 450
    assert [(i["product_id"], i["quantity"], i["unit_price_minor"]) for i in order["items"]] == [
        (shop.lamp, 2, 1250),
        (shop.mug, 3, 450),
    ]
    assert order["items"][0]["sku"] == "T-LAMP"
    assert order["shipping_address"] is None
    assert ledger(db, order["id"]) == [(shop.lamp, -2, "order"), (shop.mug, -3, "order")]
    assert (stock_of(db.conn, shop.lamp), stock_of(db.conn, shop.mug)) == (8, 97)
    invariants(db, shop)


def test_a_price_sent_by_the_client_is_refused_not_used(db: Session, shop: Shop) -> None:
    """Items have product_id and quantity only: a client-side price is an error, never a price."""
    body = json.dumps([{"product_id": shop.lamp, "quantity": 1, "unit_price_minor": 1}])
    with db.raises("PT422") as info:
        db.one(CREATE, [body])
    assert detail(info) == {"code": "invalid_input", "field": "items[0].unit_price_minor"}
    db.as_superuser()
    assert db.one("select count(*) from core.orders") == 0
    assert stock_of(db.conn, shop.lamp) == 10


def test_duplicate_lines_of_a_product_are_merged(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.mug, 2), (shop.lamp, 1), (shop.mug, 5))])
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(shop.lamp, 1), (shop.mug, 7)]
    assert order["total_minor"] == 1250 + 7 * 450
    assert ledger(db, order["id"]) == [(shop.lamp, -1, "order"), (shop.mug, -7, "order")]
    invariants(db, shop)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("null", "items"),
        ('{"product_id": 1, "quantity": 1}', "items"),
        ("[]", "items"),
        ("[1]", "items[0]"),
        ('[{"product_id": "P", "quantity": 1}]', "items[0].product_id"),
        ('[{"quantity": 1}]', "items[0].product_id"),
        ('[{"product_id": 1.5, "quantity": 1}]', "items[0].product_id"),
        ('[{"product_id": "LAMP", "quantity": 0}]', "items[0].quantity"),
        ('[{"product_id": "LAMP", "quantity": 10001}]', "items[0].quantity"),
        ('[{"product_id": "LAMP", "quantity": "2"}]', "items[0].quantity"),
        (
            '[{"product_id": "LAMP", "quantity": 1}, {"product_id": "LAMP", "quantity": -1}]',
            "items[1].quantity",
        ),
        ('[{"product_id": "LAMP", "quantity": 6000}, {"product_id": "LAMP", "quantity": 6000}]', "items"),
    ],
)
def test_create_order_validates_items(db: Session, shop: Shop, body: str, field: str) -> None:
    body = body.replace('"LAMP"', str(shop.lamp))
    with db.raises("PT422") as info:
        db.one(CREATE, [body])
    assert detail(info)["code"] == "invalid_input"
    assert detail(info)["field"] == field


def test_create_order_accepts_100_lines_and_refuses_101(db: Session, shop: Shop) -> None:
    products = [new_product(db.conn, f"T-BULK-{n}", 100, 1) for n in range(101)]
    as_customer(db, shop.alice)
    with db.raises("PT422") as info:
        db.one(CREATE, [items(*[(p, 1) for p in products])])
    assert detail(info)["field"] == "items"
    order = db.one(CREATE, [items(*[(p, 1) for p in products[:100]])])
    assert len(order["items"]) == 100
    assert order["total_minor"] == 100 * 100
    # whole-number JSON forms are whole numbers
    order = db.one(CREATE, [f'[{{"product_id": {products[100]}, "quantity": 1.0}}]'])
    assert order["items"][0]["quantity"] == 1


def test_products_must_be_active_existing_and_of_one_currency(db: Session, shop: Shop) -> None:
    hidden = new_product(db.conn, "T-HIDDEN", 100, 5, active=False)
    dollar = new_product(db.conn, "T-DOLLAR", 100, 5, currency="USD")
    as_customer(db, shop.alice)
    for product in (hidden, dollar + 1000):
        with db.raises("PT422") as info:
            db.one(CREATE, [items((shop.lamp, 1), (product, 1))])
        assert detail(info) == {
            "code": "invalid_input",
            "field": "items",
            "reason": "product_unavailable",
            "product_id": product,
        }
    with db.raises("PT422") as info:
        db.one(CREATE, [items((shop.lamp, 1), (dollar, 1))])
    assert detail(info)["reason"] == "mixed_currencies"
    assert detail(info)["currencies"] == ["EUR", "USD"]
    order = db.one(CREATE, [items((dollar, 2))])
    assert (order["currency"], order["total_minor"]) == ("USD", 200)


def test_insufficient_stock_names_the_first_short_product_and_changes_nothing(
    db: Session, shop: Shop
) -> None:
    no_order_limits(db.conn)  # 101 mugs are over a customer's default limit too: this is about the stock
    with db.raises("PT409") as info:
        db.one(CREATE, [items((shop.mug, 101), (shop.desk, 4), (shop.lamp, 1))])
    # desk and mug are both short: the lower product id is reported
    first = min(shop.mug, shop.desk)
    available = {shop.mug: 100, shop.desk: 3}[first]
    requested = {shop.mug: 101, shop.desk: 4}[first]
    assert detail(info) == {
        "code": "insufficient_stock",
        "product_id": first,
        "requested": requested,
        "available": available,
    }
    db.as_superuser()
    assert db.one("select count(*) from core.orders") == 0
    invariants(db, shop)
    order = db.one(CREATE, [items((shop.desk, 3))])  # exactly the stock is fine
    assert stock_of(db.conn, shop.desk) == 0
    assert order["total_minor"] == 3 * 9900


def test_customers_only(db: Session, shop: Shop) -> None:
    db.as_role("app_readonly")
    with db.raises("42501"):
        db.one(CREATE, [items((shop.lamp, 1))])
    db.as_role("app_readwrite", {"role": "app_readwrite"})  # no sub
    with db.raises("PT401"):
        db.one(CREATE, [items((shop.lamp, 1))])
    as_staff(db, shop.staff)  # staff may order for themselves
    order = db.one(CREATE, [items((shop.lamp, 1))])
    assert order["user_id"] == shop.staff


# --- shipping address -----------------------------------------------------------------------------------


def test_the_shipping_address_is_the_callers_own_and_is_snapshotted(db: Session, shop: Shop) -> None:
    own = new_address(db.conn, shop.alice, city="Paris")
    billing = new_address(db.conn, shop.alice, kind="billing")
    bobs = new_address(db.conn, shop.bob)
    as_customer(db, shop.alice)
    for address in (bobs, billing, bobs + 1000):
        with db.raises("PT404") as info:
            db.one(CREATE_WITH, [items((shop.lamp, 1)), address, None])
        assert detail(info) == {"code": "not_found", "resource": "address", "id": address}
    order = db.one(CREATE_WITH, [items((shop.lamp, 1)), own, None])
    assert order["shipping_address"]["address_id"] == own
    assert order["shipping_address"]["city"] == "Paris"
    db.as_superuser()
    db.conn.execute("update core.addresses set city = 'Lyon' where id = %s", [own])
    as_customer(db, shop.alice)
    assert db.one(GET, [order["id"]])["shipping_address"]["city"] == "Paris"
    # staff order for themselves only: another user's address is not theirs either
    as_staff(db, shop.staff)
    with db.raises("PT404"):
        db.one(CREATE_WITH, [items((shop.lamp, 1)), own, None])


def test_without_an_address_the_default_shipping_address_is_used(db: Session, shop: Shop) -> None:
    new_address(db.conn, shop.alice, city="Rome")
    default = new_address(db.conn, shop.alice, is_default=True, city="Oslo")
    new_address(db.conn, shop.alice, kind="billing", is_default=True, city="Bern")
    as_customer(db, shop.alice)
    order = db.one(CREATE, [items((shop.lamp, 1))])
    assert order["shipping_address"]["address_id"] == default
    assert order["shipping_address"]["city"] == "Oslo"


# --- idempotency ----------------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_response(db: Session, shop: Shop) -> None:
    body = items((shop.lamp, 2))
    first = db.one(CREATE_WITH, [body, None, "key-1"])
    assert response_status(db.conn) == "201"
    assert response_headers(db.conn) == [{"Location": f"/orders/{first['id']}"}]
    # the order changes after the first response; a replay returns the response as it was
    db.one(MODIFY, [first["id"], shop.lamp, 5])
    # the same body in another key order and spacing is the same request
    replay = db.one(CREATE_WITH, [f'[{{"quantity": 2,   "product_id": {shop.lamp}}}]', None, "key-1"])
    assert replay == first
    assert response_status(db.conn) == "201"
    assert response_headers(db.conn) == [
        {"Location": f"/orders/{first['id']}"},
        {"Idempotent-Replayed": "true"},
    ]
    db.as_superuser()
    assert db.one("select count(*) from core.orders") == 1
    assert db.one("select count(*) from core.idempotency_keys") == 1
    invariants(db, shop)


def test_the_same_key_with_another_body_is_refused(db: Session, shop: Shop) -> None:
    db.one(CREATE_WITH, [items((shop.lamp, 2)), None, "key-2"])
    for body, address in [
        (items((shop.lamp, 3)), None),
        (items((shop.mug, 2)), None),
        (items((shop.lamp, 2)), 1),
    ]:
        with db.raises("PT422") as info:
            db.one(CREATE_WITH, [body, address, "key-2"])
        assert detail(info) == {"code": "idempotency_key_reused", "field": "idempotency_key"}
    db.as_superuser()
    assert db.one("select count(*) from core.orders") == 1
    assert stock_of(db.conn, shop.lamp) == 8


def test_keys_belong_to_their_user_and_expire_after_a_day(db: Session, shop: Shop) -> None:
    body = items((shop.lamp, 1))
    alices = db.one(CREATE_WITH, [body, None, "shared"])
    as_customer(db, shop.bob)
    bobs = db.one(CREATE_WITH, [body, None, "shared"])
    assert bobs["id"] != alices["id"]
    db.as_superuser()
    db.conn.execute("update core.idempotency_keys set created_at = now() - interval '25 hours'")
    as_customer(db, shop.alice)
    again = db.one(CREATE_WITH, [body, None, "shared"])
    assert again["id"] not in (alices["id"], bobs["id"])
    assert response_headers(db.conn) == [{"Location": f"/orders/{again['id']}"}]
    with db.raises("PT422") as info:
        db.one(CREATE_WITH, [body, None, ""])
    assert detail(info)["field"] == "idempotency_key"
    invariants(db, shop)


def test_a_failed_request_stores_no_key(db: Session, shop: Shop) -> None:
    with db.raises("PT409"):
        db.one(CREATE_WITH, [items((shop.desk, 4)), None, "retry-me"])
    db.as_superuser()
    assert db.one("select count(*) from core.idempotency_keys") == 0
    as_customer(db, shop.alice)
    db.one(CREATE_WITH, [items((shop.desk, 3)), None, "retry-me"])
    assert stock_of(db.conn, shop.desk) == 0


# --- modify_order, delete_product_in_order, cancel_order ----------------------------------------------------


def test_modify_order_moves_stock_by_the_difference(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 2))])["id"]
    changed = db.one(MODIFY, [order, shop.lamp, 5])
    assert changed["total_minor"] == 5 * 1250
    assert stock_of(db.conn, shop.lamp) == 5
    invariants(db, shop)
    changed = db.one(MODIFY, [order, shop.lamp, 1])
    assert changed["total_minor"] == 1250
    assert stock_of(db.conn, shop.lamp) == 9
    invariants(db, shop)
    unchanged = db.one(MODIFY, [order, shop.lamp, 1])
    assert unchanged["items"] == changed["items"]
    assert ledger(db, order) == [
        (shop.lamp, -2, "order"),
        (shop.lamp, -3, "order_change"),
        (shop.lamp, 4, "order_change"),
    ]
    invariants(db, shop)


def test_modify_order_adds_a_line_at_the_current_price_and_keeps_old_prices(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 1))])["id"]
    db.as_superuser()
    db.conn.execute(
        "update core.products set price_minor = price_minor + 100 where id = any(%s)", [[shop.lamp, shop.mug]]
    )
    as_customer(db, shop.alice)
    changed = db.one(MODIFY, [order, shop.mug, 4])
    assert [(i["product_id"], i["quantity"], i["unit_price_minor"]) for i in changed["items"]] == [
        (shop.lamp, 1, 1250),
        (shop.mug, 4, 550),
    ]
    changed = db.one(MODIFY, [order, shop.lamp, 2])
    assert changed["items"][0]["unit_price_minor"] == 1250
    assert changed["total_minor"] == 2 * 1250 + 4 * 550
    assert ledger(db, order)[-2:] == [(shop.mug, -4, "order_change"), (shop.lamp, -1, "order_change")]
    invariants(db, shop)


def test_modify_order_refusals(db: Session, shop: Shop) -> None:
    hidden = new_product(db.conn, "T-HIDDEN", 100, 5, active=False)
    dollar = new_product(db.conn, "T-DOLLAR", 100, 5, currency="USD")
    no_order_limits(db.conn)  # 101 mugs are over a customer's default limit too: this is about the stock
    as_customer(db, shop.alice)
    order = db.one(CREATE, [items((shop.desk, 1), (shop.lamp, 1))])["id"]
    with db.raises("PT422") as info:
        db.one(MODIFY, [order, shop.desk, 0])
    assert detail(info)["field"] == "quantity"
    for quantity in (-1, 10001, None):
        with db.raises("PT422"):
            db.one(MODIFY, [order, shop.desk, quantity])
    with db.raises("PT409") as info:
        db.one(MODIFY, [order, shop.desk, 4])
    # the line has 1 and 2 are left: 3 more are requested
    assert detail(info) == {
        "code": "insufficient_stock",
        "product_id": shop.desk,
        "requested": 3,
        "available": 2,
    }
    with db.raises("PT409") as info:
        db.one(MODIFY, [order, shop.mug, 101])
    assert detail(info) == {
        "code": "insufficient_stock",
        "product_id": shop.mug,
        "requested": 101,
        "available": 100,
    }
    for product, reason in [
        (hidden, "product_unavailable"),
        (dollar, "currency_mismatch"),
        (dollar + 99, "product_unavailable"),
    ]:
        with db.raises("PT422") as info:
            db.one(MODIFY, [order, product, 1])
        assert (detail(info)["field"], detail(info)["reason"]) == ("product_id", reason)
    # a product withdrawn from sale keeps its line, which may only shrink
    db.as_superuser()
    db.conn.execute("update core.products set active = false where id = %s", [shop.lamp])
    as_customer(db, shop.alice)
    db.one(MODIFY, [order, shop.lamp, 1])
    with db.raises("PT422") as info:
        db.one(MODIFY, [order, shop.lamp, 2])
    assert detail(info)["reason"] == "product_unavailable"
    invariants(db, shop)


def test_delete_product_in_order_restores_stock_and_may_empty_the_order(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 2), (shop.mug, 10))])["id"]
    after = db.one(DELETE, [order, shop.mug])
    assert [i["product_id"] for i in after["items"]] == [shop.lamp]
    assert after["total_minor"] == 2 * 1250
    assert stock_of(db.conn, shop.mug) == 100
    invariants(db, shop)
    with db.raises("PT404") as info:
        db.one(DELETE, [order, shop.mug])
    assert detail(info) == {
        "code": "not_found",
        "resource": "order_item",
        "order_id": order,
        "product_id": shop.mug,
    }
    # the last line: the order stays, pending and empty, and can take new lines
    empty = db.one(DELETE, [order, shop.lamp])
    assert (empty["status"], empty["items"], empty["total_minor"]) == ("pending", [], 0)
    invariants(db, shop)
    refilled = db.one(MODIFY, [order, shop.desk, 1])
    assert refilled["total_minor"] == 9900
    assert ledger(db, order) == [
        (shop.lamp, -2, "order"),
        (shop.mug, -10, "order"),
        (shop.mug, 10, "order_change"),
        (shop.lamp, 2, "order_change"),
        (shop.desk, -1, "order_change"),
    ]
    invariants(db, shop)


def test_cancel_order_restores_all_stock(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 2), (shop.mug, 10), (shop.desk, 3))])["id"]
    cancelled = db.one(CANCEL, [order])
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "customer")
    assert cancelled["cancelled_at"] is not None
    assert len(cancelled["items"]) == 3  # the history stays
    assert [stock_of(db.conn, p) for p in (shop.lamp, shop.mug, shop.desk)] == [10, 100, 3]
    assert sorted(ledger(db, order)[3:]) == sorted(
        [(shop.lamp, 2, "order_cancel"), (shop.mug, 10, "order_cancel"), (shop.desk, 3, "order_cancel")]
    )
    invariants(db, shop)
    for query, params in [
        (CANCEL, [order]),
        (MODIFY, [order, shop.lamp, 1]),
        (DELETE, [order, shop.lamp]),
    ]:
        with db.raises("PT409") as info:
            db.one(query, params)
        assert detail(info) == {"code": "order_not_editable", "order_id": order, "status": "cancelled"}
    invariants(db, shop)


def test_only_pending_orders_are_editable(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 1))])["id"]
    db.as_superuser()
    db.conn.execute("update core.orders set status = 'paid', paid_at = now() where id = %s", [order])
    as_customer(db, shop.alice)
    for query, params in [(MODIFY, [order, shop.lamp, 2]), (DELETE, [order, shop.lamp]), (CANCEL, [order])]:
        with db.raises("PT409") as info:
            db.one(query, params)
        assert detail(info) == {"code": "order_not_editable", "order_id": order, "status": "paid"}
    invariants(db, shop)


def test_staff_act_on_any_order(db: Session, shop: Shop) -> None:
    order = db.one(CREATE, [items((shop.lamp, 2), (shop.mug, 1))])["id"]
    as_staff(db, shop.staff)
    assert db.one(GET, [order])["user_id"] == shop.alice
    assert db.one(MODIFY, [order, shop.lamp, 3])["total_minor"] == 3 * 1250 + 450
    assert db.one(DELETE, [order, shop.mug])["total_minor"] == 3 * 1250
    cancelled = db.one(CANCEL, [order])
    assert (cancelled["cancel_reason"], cancelled["user_id"]) == ("staff", shop.alice)
    db.as_superuser()
    actors = db.all(
        "select distinct actor_user_id from core.inventory_movements where order_id = %s", [order]
    )
    assert sorted(a for (a,) in actors) == sorted([shop.alice, shop.staff])
    invariants(db, shop)


# --- reading: get_order, api.orders, api.order_items -----------------------------------------------------


def test_get_order_and_the_views_show_the_callers_orders(db: Session, shop: Shop) -> None:
    first = db.one(CREATE, [items((shop.lamp, 1))])
    second = db.one(CREATE, [items((shop.mug, 2), (shop.desk, 1))])
    assert db.one(GET, [second["id"]]) == second
    rows = db.all(
        "select id, user_id, status, currency, total_minor, refunded_minor, items from api.orders order by id"
    )
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (first["id"], shop.alice, "pending", "EUR", 1250, 0),
        (second["id"], shop.alice, "pending", "EUR", 2 * 450 + 9900, 0),
    ]
    assert rows[1][6] == second["items"]
    # newest first when no order is asked for
    assert [r[0] for r in db.all("select id from api.orders")] == [second["id"], first["id"]]
    lines = db.all(
        "select order_id, product_id, quantity, unit_price_minor, line_total_minor from api.order_items"
    )
    assert sorted(lines) == sorted(
        [
            (first["id"], shop.lamp, 1, 1250, 1250),
            (second["id"], shop.mug, 2, 450, 900),
            (second["id"], shop.desk, 1, 9900, 9900),
        ]
    )
    db.as_role("app_readonly")
    with db.raises("42501"):
        db.all("select * from api.orders")


def test_routes_are_declared(db: Session) -> None:
    rows = db.all(
        "select coalesce(p.proname, c.relname), d.description from pg_description as d"
        " left join pg_proc as p on d.classoid = 'pg_proc'::regclass and d.objoid = p.oid"
        " left join pg_class as c"
        " on d.classoid = 'pg_class'::regclass and d.objoid = c.oid and d.objsubid = 0"
        " where coalesce(p.pronamespace, c.relnamespace) = 'api'::regnamespace"
        " and coalesce(p.proname, c.relname) = any(%s)",
        [["create_order", "modify_order", "delete_product_in_order", "cancel_order", "get_order", "orders"]],
    )
    routes = {name: [line for line in text.splitlines() if line.startswith("@route ")] for name, text in rows}
    assert routes == {
        "create_order": ["@route POST /orders"],
        "modify_order": ["@route PATCH /orders/{order_id}/items/{product_id}"],
        "delete_product_in_order": ["@route DELETE /orders/{order_id}/items/{product_id}"],
        "cancel_order": ["@route POST /orders/{order_id}/cancel"],
        "get_order": ["@route GET /orders/{order_id}"],
        "orders": ["@route GET /orders"],
    }


# --- row-level security: another customer's order is as missing as a missing one --------------------------


def error_of(
    db: Session, query: str, params: list[Any]
) -> tuple[str | None, str, str | None, dict[str, Any]]:
    with db.raises("PT404") as info:
        db.one(query, params)
    diag = info.value.diag
    return info.value.sqlstate, str(diag.message_primary), diag.message_hint, detail(info)


@pytest.mark.parametrize(
    ("query", "arguments"),
    [
        (GET, ["order"]),
        (MODIFY, ["order", "lamp", 3]),
        (DELETE, ["order", "lamp"]),
        (CANCEL, ["order"]),
    ],
)
def test_another_customers_order_is_exactly_as_missing(
    db: Session, shop: Shop, query: str, arguments: list[Any]
) -> None:
    order = db.one(CREATE, [items((shop.lamp, 2))])["id"]
    as_customer(db, shop.bob)

    def bind(order_id: int) -> list[Any]:
        values = {"order": order_id, "lamp": shop.lamp}
        return [values.get(a, a) if isinstance(a, str) else a for a in arguments]

    missing_id = order + 100000
    theirs = error_of(db, query, bind(order))
    missing = error_of(db, query, bind(missing_id))
    assert theirs[:3] == missing[:3]
    assert theirs[3] == {"code": "not_found", "resource": "order", "id": order}
    assert missing[3] == {"code": "not_found", "resource": "order", "id": missing_id}
    check_invariants(db.conn, shop.products, shop.initial)
    db.as_superuser()
    assert db.all("select total_minor, status from core.orders where id = %s", [order]) == [(2500, "pending")]


def test_another_customer_sees_none_of_the_rows(db: Session, shop: Shop) -> None:
    alices = db.one(CREATE, [items((shop.lamp, 2), (shop.mug, 1))])["id"]
    as_customer(db, shop.bob)
    bobs = db.one(CREATE, [items((shop.mug, 1))])["id"]
    assert db.all("select id from api.orders") == [(bobs,)]
    assert db.all("select distinct order_id from api.order_items") == [(bobs,)]
    assert db.all("select id from api.orders where id = %s", [alices]) == []
    assert db.all("select * from api.order_items where order_id = %s", [alices]) == []
    as_staff(db, shop.staff)
    assert sorted(r[0] for r in db.all("select id from api.orders")) == sorted([alices, bobs])
    assert db.one("select count(*) from api.order_items") == 3
