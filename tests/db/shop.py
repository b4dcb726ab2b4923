"""Helpers of the catalog and order tests: fixtures inserted as the superuser (stock through the ledger, as
in production), the request context of a customer or of staff, and the invariants of stock and totals."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
import pytest
from psycopg import sql

from gateway import db as gwdb
from tests.conftest import Session

Conn = psycopg.Connection[Any]

PRODUCT_KEYS = {"id", "sku", "name", "description", "price_minor", "currency", "stock", "category_id"}
ORDER_KEYS = {
    "id",
    "status",
    "currency",
    "total_minor",
    "items",
    "created_at",
    "refunded_minor",
    "updated_at",
}


# the shop's settings of unpaid orders (the gateway sets them per transaction from its environment)
ORDER_LIMITS = ("commercecore.max_open_orders", "commercecore.max_units_per_product")
UNLIMITED = str(2**31 - 1)


def shop_setting(conn: Conn, name: str, value: str) -> None:
    """Sets a shop setting on this connection: for the rest of the test's transaction (rolled back with it),
    or for the session when it commits or runs in autocommit."""
    conn.execute("select set_config(%s, %s, false)", [name, value])


def no_order_limits(conn: Conn) -> None:
    """Lifts the per-customer limits on unpaid orders on this connection: for tests of other rules (stock,
    locking) whose customers place more orders or units than a real customer may."""
    for name in ORDER_LIMITS:
        shop_setting(conn, name, UNLIMITED)


def no_order_limits_in_database(url: str) -> None:
    """The same for every later connection to a database of the test's own (`fresh_db`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ORDER_LIMITS:
            conn.execute(
                sql.SQL("alter database {} set {} = {}").format(
                    sql.Identifier(conn.info.dbname), sql.SQL(name), sql.Literal(UNLIMITED)
                )
            )


def detail(error: psycopg.Error | pytest.ExceptionInfo[psycopg.Error]) -> dict[str, Any]:
    """The JSON object of an error's DETAIL."""
    exc = error.value if isinstance(error, pytest.ExceptionInfo) else error
    text = exc.diag.message_detail
    assert text, f"no detail on {exc}"
    parsed = json.loads(text)
    assert isinstance(parsed, dict)
    return parsed


def new_user(conn: Conn, email: str, role: str = "app_readwrite") -> int:
    conn.execute("reset role")
    row = conn.execute(
        "insert into core.users (email, role) values (%s, %s) returning id", [email, role]
    ).fetchone()
    assert row is not None
    return int(row[0])


def new_product(
    conn: Conn,
    sku: str,
    price: int = 1000,
    stock: int = 10,
    *,
    name: str | None = None,
    description: str = "",
    currency: str = "EUR",
    active: bool = True,
    category_id: int | None = None,
    cost: int | None = None,
) -> int:
    conn.execute("reset role")
    row = conn.execute(
        "insert into core.products"
        " (sku, name, description, price_minor, currency, active, category_id, cost_minor)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s) returning id",
        [sku, name or sku, description, price, currency, active, category_id, cost],
    ).fetchone()
    assert row is not None
    product_id = int(row[0])
    if stock:
        conn.execute(
            "insert into core.inventory_movements (product_id, delta, reason) values (%s, %s, 'restock')",
            [product_id, stock],
        )
    return product_id


def new_address(
    conn: Conn, user_id: int, kind: str = "shipping", is_default: bool = False, city: str = "Berlin"
) -> int:
    conn.execute("reset role")
    row = conn.execute(
        "insert into core.addresses (user_id, kind, is_default, full_name, line1, city, postal_code, country)"
        " values (%s, %s, %s, 'Ada Lovelace', '1 Main St', %s, '10115', 'DE') returning id",
        [user_id, kind, is_default, city],
    ).fetchone()
    assert row is not None
    return int(row[0])


def as_customer(db: Session, user_id: int) -> None:
    db.as_role("app_readwrite", db.claims(user_id))


def as_staff(db: Session, user_id: int) -> None:
    db.as_role("app_admin", db.claims(user_id, "app_admin"))


def items(*lines: tuple[int, int]) -> str:
    return json.dumps([{"product_id": product_id, "quantity": quantity} for product_id, quantity in lines])


def stock_of(conn: Conn, product_id: int) -> int:
    conn.execute("reset role")
    row = conn.execute("select stock from core.products where id = %s", [product_id]).fetchone()
    assert row is not None
    return int(row[0])


def response_status(conn: Conn) -> str | None:
    row = conn.execute("select current_setting('response.status', true)").fetchone()
    return row[0] if row else None


def response_headers(conn: Conn) -> list[dict[str, str]]:
    row = conn.execute("select current_setting('response.headers', true)").fetchone()
    return json.loads(row[0]) if row and row[0] else []


def check_invariants(
    conn: Conn, product_ids: Iterable[int], initial: Mapping[int, int] | None = None
) -> None:
    """Stock equals the ledger for every product, every order's total equals its items, what a live order
    holds per the ledger equals its lines, and (given the initial stock) initial = stock + units in live
    orders. Runs as the superuser; the caller switches back to its role."""
    conn.execute("reset role")
    ids = list(product_ids)
    bad_stock = conn.execute(
        "select p.id, p.stock, coalesce(sum(m.delta), 0) from core.products as p"
        " left join core.inventory_movements as m on m.product_id = p.id"
        " where p.id = any(%s) group by p.id having p.stock <> coalesce(sum(m.delta), 0)",
        [ids],
    ).fetchall()
    assert bad_stock == [], "stock differs from the ledger sum (id, stock, ledger)"
    bad_totals = conn.execute(
        "select o.id, o.total_minor, coalesce(sum(i.quantity::bigint * i.unit_price_minor), 0)"
        " from core.orders as o left join core.order_items as i on i.order_id = o.id"
        " group by o.id having o.total_minor <> coalesce(sum(i.quantity::bigint * i.unit_price_minor), 0)"
    ).fetchall()
    assert bad_totals == [], "order totals differ from their items (id, total, items)"
    bad_holdings = conn.execute(
        """
        select coalesce(l.order_id, h.order_id), coalesce(l.product_id, h.product_id), l.quantity, h.held
        from (
          select i.order_id, i.product_id, i.quantity from core.order_items as i
          join core.orders as o on o.id = i.order_id where o.status <> 'cancelled'
        ) as l
        full join (
          select m.order_id, m.product_id, -sum(m.delta) as held from core.inventory_movements as m
          where m.order_id is not null group by 1, 2 having sum(m.delta) <> 0
        ) as h on h.order_id = l.order_id and h.product_id = l.product_id
        where l.quantity is distinct from h.held::integer
        """
    ).fetchall()
    assert bad_holdings == [], "the ledger holds other units than the live orders' lines"
    if initial is not None:
        rows = conn.execute(
            "select p.id, p.stock + coalesce((select sum(i.quantity) from core.order_items as i"
            " join core.orders as o on o.id = i.order_id"
            " where i.product_id = p.id and o.status <> 'cancelled'), 0)"
            " from core.products as p where p.id = any(%s)",
            [ids],
        ).fetchall()
        assert {pid: int(total) for pid, total in rows} == dict(initial)


def request(
    conn: Conn, role: str, claims: Mapping[str, Any], settings: Mapping[str, Mapping[str, str]]
) -> None:
    """Open the request context on a connection that is inside a transaction, as the gateway does."""
    query, params = gwdb.request_context(role, claims, settings)
    conn.execute(query, params)
