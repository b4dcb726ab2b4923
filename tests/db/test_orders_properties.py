"""Property: after any sequence of create, modify, delete and cancel (with repricing and restocking by staff
in between), the database agrees with a plain model of the shop: every outcome (success or the exact
error), every order's items and status, every product's stock; and the invariants hold: total_minor =
sum(unit_price_minor x quantity), stock = ledger sum, initial + restocks = stock + units in live orders.
Each example runs in a savepoint that is rolled back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Session
from tests.db.shop import as_customer, as_staff, check_invariants, detail, items, new_product, new_user

PRODUCTS = 4
PRICES = [1250, 990, 100, 45000]
STOCK = [6, 3, 20, 1]

product_index = st.integers(0, PRODUCTS - 1)
order_ref = st.integers(0, 7)
quantity = st.integers(1, 7)
operation = st.one_of(
    st.tuples(st.just("create"), st.lists(st.tuples(product_index, quantity), min_size=1, max_size=5)),
    st.tuples(st.just("modify"), order_ref, product_index, quantity),
    st.tuples(st.just("delete"), order_ref, product_index),
    st.tuples(st.just("cancel"), order_ref),
    st.tuples(st.just("reprice"), product_index, st.integers(0, 5000)),
    st.tuples(st.just("restock"), product_index, st.integers(-4, 6)),
)


@dataclass
class Order:
    id: int
    status: str = "pending"
    lines: dict[int, tuple[int, int]] = field(default_factory=dict)  # product -> (quantity, unit price)


@dataclass
class Model:
    price: dict[int, int]
    stock: dict[int, int]
    restocked: dict[int, int]
    staff: int
    orders: list[Order] = field(default_factory=list)


def expect_error(db: Session, query: str, params: list[Any], sqlstate: str, **fields: Any) -> None:
    with db.raises(sqlstate) as info:
        db.one(query, params)
    got = detail(info)
    assert {key: got.get(key) for key in fields} == fields


def apply(db: Session, model: Model, products: list[int], op: tuple[Any, ...]) -> None:
    """Runs one operation as the customer (or staff for reprice/restock), predicting its outcome."""
    kind = op[0]
    if kind == "create":
        merged: dict[int, int] = {}
        for index, qty in op[1]:
            merged[products[index]] = merged.get(products[index], 0) + qty
        short = next((p for p in sorted(merged) if model.stock[p] < merged[p]), None)
        body = items(*[(products[index], qty) for index, qty in op[1]])
        if short is not None:
            expect_error(
                db,
                "select api.create_order(%s::jsonb)",
                [body],
                "PT409",
                code="insufficient_stock",
                product_id=short,
                requested=merged[short],
                available=model.stock[short],
            )
            return
        created = db.one("select api.create_order(%s::jsonb)", [body])
        order = Order(created["id"])
        for product, qty in merged.items():
            model.stock[product] -= qty
            order.lines[product] = (qty, model.price[product])
        model.orders.append(order)
        return
    if kind in ("reprice", "restock"):
        product = products[op[1]]
        as_staff(db, model.staff)
        if kind == "reprice":
            db.one("select api.update_product(%s, price_minor => %s)", [product, op[2]])
            model.price[product] = op[2]
        elif op[2] == 0:
            expect_error(db, "select api.adjust_stock(%s, 0, 'restock')", [product], "PT422", field="delta")
        elif model.stock[product] + op[2] < 0:
            expect_error(
                db,
                "select api.adjust_stock(%s, %s, 'adjustment')",
                [product, op[2]],
                "PT409",
                code="insufficient_stock",
            )
        else:
            db.one("select api.adjust_stock(%s, %s, 'adjustment')", [product, op[2]])
            model.stock[product] += op[2]
            model.restocked[product] += op[2]
        return
    if not model.orders:
        return
    order = model.orders[op[1] % len(model.orders)]
    if kind == "modify":
        product, qty = products[op[2]], op[3]
        query, params = "select api.modify_order(%s, %s, %s)", [order.id, product, qty]
    elif kind == "delete":
        product = products[op[2]]
        query, params = "select api.delete_product_in_order(%s, %s)", [order.id, product]
    else:
        query, params = "select api.cancel_order(%s)", [order.id]
    if order.status != "pending":
        expect_error(
            db, query, params, "PT409", code="order_not_editable", order_id=order.id, status=order.status
        )
        return
    if kind == "modify":
        held = order.lines.get(product, (0, model.price[product]))
        change = qty - held[0]
        if change > 0 and model.stock[product] < change:
            expect_error(db, query, params, "PT409", code="insufficient_stock", requested=change)
            return
        db.one(query, params)
        model.stock[product] -= change
        order.lines[product] = (qty, held[1])
    elif kind == "delete":
        if product not in order.lines:
            expect_error(db, query, params, "PT404", resource="order_item")
            return
        db.one(query, params)
        model.stock[product] += order.lines.pop(product)[0]
    else:
        db.one(query, params)
        for product, (qty, _) in order.lines.items():
            model.stock[product] += qty
        order.status = "cancelled"


def assert_matches(db: Session, model: Model, products: list[int]) -> None:
    db.as_superuser()
    stock = dict(db.all("select id, stock from core.products where id = any(%s)", [products]))
    assert stock == model.stock
    for order in model.orders:
        status, total = db.all("select status, total_minor from core.orders where id = %s", [order.id])[0]
        lines = {
            product: (qty, price)
            for product, qty, price in db.all(
                "select product_id, quantity, unit_price_minor from core.order_items where order_id = %s",
                [order.id],
            )
        }
        assert (status, lines) == (order.status, order.lines)
        assert total == sum(qty * price for qty, price in order.lines.values())
    initial = {p: STOCK[n] + model.restocked[p] for n, p in enumerate(products)}
    check_invariants(db.conn, products, initial)


@pytest.fixture
def customer(db: Session) -> int:
    return new_user(db.conn, "model@example.com")


@pytest.fixture
def staff(db: Session) -> int:
    return new_user(db.conn, "model-staff@example.com", "app_admin")


def new_model(products: list[int], staff: int) -> Model:
    return Model(
        price=dict(zip(products, PRICES, strict=True)),
        stock=dict(zip(products, STOCK, strict=True)),
        restocked=dict.fromkeys(products, 0),
        staff=staff,
    )


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(operation, min_size=1, max_size=14))
def test_any_sequence_of_order_changes_keeps_totals_and_stock(
    db: Session, customer: int, staff: int, operations: list[tuple[Any, ...]]
) -> None:
    with db.conn.transaction(force_rollback=True):
        products = [new_product(db.conn, f"T-M{n}", PRICES[n], STOCK[n]) for n in range(PRODUCTS)]
        model = new_model(products, staff)
        for op in operations:
            as_customer(db, customer)
            apply(db, model, products, op)
            assert_matches(db, model, products)


def test_the_model_reaches_every_outcome(db: Session, customer: int, staff: int) -> None:
    """The property's operations are not vacuous: one fixed sequence hits success and each refusal (the
    expected errors are asserted by apply)."""
    products = [new_product(db.conn, f"T-M{n}", PRICES[n], STOCK[n]) for n in range(PRODUCTS)]
    model = new_model(products, staff)
    script: list[tuple[Any, ...]] = [
        ("create", [(0, 2), (1, 1), (0, 1)]),  # merged: 3 of product 0, 1 of product 1
        ("create", [(3, 2)]),  # 409: one left
        ("reprice", 0, 2000),
        ("modify", 0, 0, 5),  # 2 more, 3 left: the line keeps its old price
        ("modify", 0, 2, 4),  # a new line at the current price
        ("delete", 0, 3),  # 404: not in the order
        ("delete", 0, 1),
        ("restock", 3, -2),  # 409: below zero
        ("restock", 3, 4),
        ("restock", 3, 0),  # 422
        ("cancel", 0),
        ("modify", 0, 0, 1),  # 409: cancelled
    ]
    for op in script:
        as_customer(db, customer)
        apply(db, model, products, op)
        assert_matches(db, model, products)
    assert model.orders[0].status == "cancelled"
    assert model.orders[0].lines == {products[0]: (5, 1250), products[2]: (4, 100)}
    assert model.stock == {p: STOCK[n] + (4 if n == 3 else 0) for n, p in enumerate(products)}
