"""Limits on a customer's unpaid orders: at most COMMERCECORE_MAX_OPEN_ORDERS of them (5), and per product at
most its max_per_customer units across them (else COMMERCECORE_MAX_UNITS_PER_PRODUCT, 100); an order past
ORDER_MAX_UNPAID_AGE can no longer grow. Checked in SQL under the customer's lock: concurrent requests of one
customer never get past them, and other customers are not held up."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from gateway import db as gwdb
from tests.conftest import Session
from tests.db.shop import (
    as_customer,
    as_staff,
    check_invariants,
    detail,
    items,
    new_product,
    new_user,
    shop_setting,
    stock_of,
)
from tests.db.test_orders_concurrency import outcome, role_settings, run_threads

CREATE = "select api.create_order(%s::jsonb)"
MODIFY = "select api.modify_order(%s, %s, %s)"
CANCEL = "select api.cancel_order(%s)"
BARRIER_TIMEOUT = 60


def place(db: Session, *lines: tuple[int, int]) -> dict[str, Any]:
    document: dict[str, Any] = db.one(CREATE, [items(*lines)])
    return document


def pending_units(conn: psycopg.Connection[Any], user_id: int, product_id: int) -> int:
    conn.execute("reset role")
    row = conn.execute(
        "select coalesce(sum(i.quantity), 0) from core.order_items as i"
        " join core.orders as o on o.id = i.order_id"
        " where o.user_id = %s and o.status = 'pending' and i.product_id = %s",
        [user_id, product_id],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_customer_has_at_most_five_unpaid_orders(db: Session) -> None:
    alice = new_user(db.conn, "alice@example.com")
    bob = new_user(db.conn, "bob@example.com")
    lamp = new_product(db.conn, "T-LAMP", 1250, 50)
    as_customer(db, alice)
    orders = [place(db, (lamp, 1))["id"] for _ in range(5)]

    with db.raises("PT409") as info:
        place(db, (lamp, 1))
    assert detail(info) == {"code": "too_many_open_orders", "limit": 5, "open_orders": 5}
    assert info.value.diag.message_hint
    assert stock_of(db.conn, lamp) == 45  # the refused order took nothing

    as_customer(db, bob)  # another customer is not concerned
    place(db, (lamp, 1))

    # a cancelled order and a paid one are not unpaid any more: each frees a place
    as_customer(db, alice)
    db.one(CANCEL, [orders[0]])
    place(db, (lamp, 1))
    db.as_superuser()
    db.conn.execute("update core.orders set status = 'paid', paid_at = now() where id = %s", [orders[1]])
    as_customer(db, alice)
    place(db, (lamp, 1))
    with db.raises("PT409"):
        place(db, (lamp, 1))


def test_the_limits_follow_the_settings_the_gateway_sets(db: Session) -> None:
    alice = new_user(db.conn, "alice@example.com")
    lamp = new_product(db.conn, "T-LAMP", 1250, 50)
    as_customer(db, alice)
    shop_setting(db.conn, "commercecore.max_open_orders", "2")
    shop_setting(db.conn, "commercecore.max_units_per_product", "7")
    place(db, (lamp, 3))
    with db.raises("PT409") as info:
        place(db, (lamp, 5))
    assert (detail(info)["code"], detail(info)["limit"]) == ("per_customer_limit", 7)
    place(db, (lamp, 4))
    with db.raises("PT409") as info:
        place(db, (lamp, 1))
    assert detail(info) == {"code": "too_many_open_orders", "limit": 2, "open_orders": 2}


def test_units_of_a_product_are_limited_across_unpaid_orders(db: Session) -> None:
    alice = new_user(db.conn, "alice@example.com")
    mug = new_product(db.conn, "T-MUG", 450, 500)
    lamp = new_product(db.conn, "T-LAMP", 1250, 500)
    as_customer(db, alice)
    first = place(db, (mug, 60), (lamp, 1))["id"]
    place(db, (mug, 40))  # 100: the shop's default, exactly

    with db.raises("PT409") as info:
        place(db, (lamp, 1), (mug, 1))
    assert detail(info) == {
        "code": "per_customer_limit",
        "product_id": mug,
        "limit": 100,
        "held": 100,
        "requested": 1,
        "remaining": 0,
    }
    assert info.value.diag.message_hint
    with db.raises("PT409"):  # modify_order adds units too
        db.one(MODIFY, [first, mug, 61])
    db.one(MODIFY, [first, mug, 10])  # giving units back is never refused
    db.one(MODIFY, [first, mug, 60])  # and they may be taken again
    place(db, (lamp, 98))  # other products have their own count
    assert pending_units(db.conn, alice, mug) == 100
    check_invariants(db.conn, [mug, lamp], {mug: 500, lamp: 500})


def test_a_products_own_limit_is_staff_settable_and_wins(db: Session) -> None:
    alice = new_user(db.conn, "alice@example.com")
    staff = new_user(db.conn, "staff@example.com", "app_admin")
    as_staff(db, staff)
    console = db.one(
        "select api.create_product(sku => 'T-CONSOLE', name => 'Console', price_minor => 49900,"
        " stock => 50, max_per_customer => 2)"
    )
    assert console["max_per_customer"] == 2
    with db.raises("PT422") as info:
        db.one("select api.update_product(%s, max_per_customer => 0)", [console["id"]])
    assert detail(info)["field"] == "max_per_customer"

    as_customer(db, alice)
    order = place(db, (console["id"], 1))["id"]
    with db.raises("PT409") as info:
        place(db, (console["id"], 2))
    found = detail(info)
    assert (found["code"], found["limit"], found["held"], found["remaining"]) == (
        "per_customer_limit",
        2,
        1,
        1,
    )
    # staff changing the customer's order are held to the customer's limit
    as_staff(db, staff)
    with db.raises("PT409"):
        db.one(MODIFY, [order, console["id"], 3])
    db.one(MODIFY, [order, console["id"], 2])

    # raised by staff, it applies from the next request; unset, the shop's default applies again
    db.one("select api.update_product(%s, max_per_customer => 5)", [console["id"]])
    as_customer(db, alice)
    place(db, (console["id"], 3))
    as_staff(db, staff)
    cleared = db.one("select api.update_product(%s, unset => '{max_per_customer}')", [console["id"]])
    assert cleared["max_per_customer"] is None
    as_customer(db, alice)
    place(db, (console["id"], 40))
    assert db.one("select api.get_product(%s)", [console["id"]])["max_per_customer"] is None


def test_an_order_past_its_maximum_age_can_only_be_cancelled(db: Session) -> None:
    alice = new_user(db.conn, "alice@example.com")
    lamp = new_product(db.conn, "T-LAMP", 1250, 50)
    as_customer(db, alice)
    order = place(db, (lamp, 2))["id"]
    db.as_superuser()
    db.conn.execute(
        "update core.orders set created_at = now() - interval '61 minutes' where id = %s", [order]
    )
    as_customer(db, alice)
    with db.raises("PT409") as info:
        db.one(MODIFY, [order, lamp, 3])
    assert detail(info)["code"] == "order_expired"
    assert detail(info)["max_age_seconds"] == 3600
    shop_setting(db.conn, "commercecore.order_max_unpaid_age", "2 hours")
    db.one(MODIFY, [order, lamp, 3])  # the age follows the setting
    shop_setting(db.conn, "commercecore.order_max_unpaid_age", "1 hour")
    assert db.one(CANCEL, [order])["status"] == "cancelled"
    assert stock_of(db.conn, lamp) == 50


# -- concurrency: parallel connections, each a request of its own, released together ----------------------


def race(url: str, claims_of: list[dict[str, str]], calls: list[tuple[str, list[Any]]]) -> list[str]:
    """Each call on its own connection as its customer (the gateway's request context), all released
    together by a barrier; the outcome of each: "ok" or the error's code."""
    with psycopg.connect(url, autocommit=True) as setup:
        settings = role_settings(setup)
    barrier = threading.Barrier(len(calls), timeout=BARRIER_TIMEOUT)

    def call(n: int) -> str:
        query, params = calls[n]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("set lock_timeout = '20s'")  # a deadlock or a lost wake-up fails instead of hanging
            barrier.wait()
            try:
                with conn.transaction():
                    context, values = gwdb.request_context("app_readwrite", claims_of[n], settings)
                    conn.execute(context, values)
                    conn.execute(query, params)
            except psycopg.Error as exc:
                return outcome(exc)[1] or str(exc.sqlstate)
        return "ok"

    return run_threads(len(calls), call)


def claims(user_id: int) -> dict[str, str]:
    return {"sub": str(user_id), "role": "app_readwrite"}


def test_concurrent_orders_of_one_customer_never_exceed_the_limits(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        greedy = new_user(setup, "greedy@example.com")
        normal = new_user(setup, "normal@example.com")
        products = [new_product(setup, f"T-P{n}", 100, 1000) for n in range(9)]

    # eight new orders at once, each of its own product (no shared product row to queue on): five places
    calls = [(CREATE, [items((products[n], 1))]) for n in range(8)]
    # and, at the same moment, another customer's order of the same products
    calls.append((CREATE, [items(*[(p, 1) for p in products[:8]])]))
    outcomes = race(fresh_db, [claims(greedy)] * 8 + [claims(normal)], calls)
    assert sorted(outcomes[:8]) == ["ok"] * 5 + ["too_many_open_orders"] * 3
    assert outcomes[8] == "ok"

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        open_orders = conn.execute(
            "select id from core.orders where user_id = %s and status = 'pending' order by id", [greedy]
        ).fetchall()
        assert len(open_orders) == 5
        hot = products[8]
        # eight requests that add 30 units of one product to the customer's five orders at once: three fit
        # in 100 (an order asked twice sets the same quantity again)
    calls = [(MODIFY, [open_orders[n % 5][0], hot, 30]) for n in range(8)]
    outcomes = race(fresh_db, [claims(greedy)] * 8, calls)
    assert "per_customer_limit" in outcomes
    assert set(outcomes) <= {"ok", "per_customer_limit"}

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert pending_units(conn, greedy, hot) == 90
        check_invariants(conn, products, dict.fromkeys(products, 1000))


@pytest.mark.parametrize("lines", [1, 3])
def test_concurrent_orders_of_one_product_stop_at_its_limit(fresh_db: str, lines: int) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        greedy = new_user(setup, "greedy@example.com")
        normal = new_user(setup, "normal@example.com")
        hot = new_product(setup, "T-HOT", 100, 1000)
        others = [new_product(setup, f"T-O{n}", 100, 1000) for n in range(lines - 1)]
        setup.execute("update core.products set max_per_customer = 70 where id = %s", [hot])
    body = items((hot, 30), *[(p, 1) for p in others])
    outcomes = race(
        fresh_db, [claims(greedy)] * 8 + [claims(normal)], [(CREATE, [body])] * 8 + [(CREATE, [body])]
    )
    # 30 + 30 fit in 70; a third would hold 90
    assert sorted(outcomes[:8]) == ["ok"] * 2 + ["per_customer_limit"] * 6
    assert outcomes[8] == "ok"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert pending_units(conn, greedy, hot) == 60
        assert pending_units(conn, normal, hot) == 30
        check_invariants(conn, [hot, *others], dict.fromkeys([hot, *others], 1000))
