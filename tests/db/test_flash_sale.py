"""Flash-sale mode (stock_shards) as staff and customers see it: the setting and its limit, the stock the
catalog and the orders show (the total), the shards kept only through the ledger, and a property: any
sequence of splits, folds, restocks, orders, changes and cancels keeps the total, the shards and the ledger
in agreement, and a split shares the units out evenly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Session
from tests.db.flash import check_flash_invariants, on_hand, set_shards
from tests.db.shop import (
    as_customer,
    as_staff,
    detail,
    items,
    new_product,
    new_user,
    no_order_limits,
    shop_setting,
)
from tests.db.test_ops import as_dba


@pytest.fixture
def staff(db: Session) -> int:
    return new_user(db.conn, "flash-staff@example.com", "app_admin")


@pytest.fixture
def customer(db: Session) -> int:
    return new_user(db.conn, "flash-buyer@example.com")


def shards_of(db: Session, product: int) -> list[tuple[int, int]]:
    db.as_superuser()
    rows = db.all(
        "select shard, units from core.stock_shards where product_id = %s order by shard", [product]
    )
    return [(int(shard), int(units)) for shard, units in rows]


def test_staff_turn_the_mode_on_and_off_and_the_stock_shown_stays_the_total(
    db: Session, staff: int, customer: int
) -> None:
    product = new_product(db.conn, "T-SHARDED", 700, 10)
    as_staff(db, staff)
    shown = db.one("select api.update_product(%s, stock_shards => 4)", [product])
    assert (shown["stock"], shown["stock_shards"]) == (10, 4)
    assert shards_of(db, product) == [(1, 3), (2, 3), (3, 2), (4, 2)]
    assert db.one("select stock from core.products where id = %s", [product]) == 0
    # everyone sees the total: the product, the catalog, search; only staff see stock_shards
    db.as_role("app_readonly")
    public = db.one("select api.get_product(%s)", [product])
    assert public["stock"] == 10
    assert "stock_shards" not in public
    assert db.one("select stock from api.products where id = %s", [product]) == 10
    assert db.all("select stock from api.search_products(q => 'T-SHARDED', in_stock => true)") == [(10,)]
    assert db.all("select id from api.search_products(q => 'T-SHARDED', in_stock => false)") == []
    # an order takes from the shards; its document and the catalog show what is left
    as_customer(db, customer)
    order = db.one("select api.create_order(%s::jsonb)", [items((product, 3))])
    assert order["total_minor"] == 2100
    assert db.one("select api.get_order(%s)", [order["id"]]) == order
    assert db.one("select stock from api.products where id = %s", [product]) == 7
    # off again: the units fold back into the product row
    as_staff(db, staff)
    folded = db.one("select api.update_product(%s, stock_shards => 1)", [product])
    assert (folded["stock"], folded["stock_shards"]) == (7, 1)
    assert shards_of(db, product) == []
    assert db.one("select stock from core.products where id = %s", [product]) == 7
    db.as_superuser()
    reasons = db.all(
        "select reason, count(*) from core.inventory_movements where product_id = %s group by 1 order by 1",
        [product],
    )
    assert reasons == [
        ("order", 1),
        ("rebalance", 9),
        ("restock", 1),
    ]  # split: 1 + 4, fold: 4 (one shard empty)
    check_flash_invariants(db.conn, [product])


def test_stock_shards_outside_the_limit_is_refused_with_the_limit(db: Session, staff: int) -> None:
    product = new_product(db.conn, "T-LIMIT", 100, 5)
    as_staff(db, staff)
    for value in (0, 65, -1):
        with db.raises("PT422") as info:
            db.one("select api.update_product(%s, stock_shards => %s)", [product, value])
        assert detail(info) == {
            "code": "invalid_input",
            "field": "stock_shards",
            "min": 1,
            "max": 64,
            "value": value,
        }
    assert db.one("select api.update_product(%s, stock_shards => 64)", [product])["stock_shards"] == 64
    # the limit is a setting of the database or role (here of the transaction)
    shop_setting(db.conn, "commercecore.max_stock_shards", "8")
    as_staff(db, staff)
    with db.raises("PT422") as info:
        db.one("select api.update_product(%s, stock_shards => 9)", [product])
    assert detail(info)["max"] == 8
    assert db.one("select api.update_product(%s, stock_shards => 8)", [product])["stock_shards"] == 8
    assert len(shards_of(db, product)) == 8


def test_shards_move_only_through_the_ledger(db: Session, staff: int) -> None:
    product = new_product(db.conn, "T-GUARDED", 100, 6)
    as_staff(db, staff)
    db.one("select api.update_product(%s, stock_shards => 2)", [product])
    db.as_superuser()
    for statement in (
        "update core.stock_shards set units = units + 1 where product_id = %s",
        "delete from core.stock_shards where product_id = %s",
        "insert into core.stock_shards (product_id, shard, units) values (%s, 3, 5)",
        "update core.products set stock = 5 where id = %s",
    ):
        with db.raises("23514"):
            db.conn.execute(statement, [product])
    # a movement of a shard the product does not have moves nothing
    with db.raises("23503"):
        db.conn.execute(
            "insert into core.inventory_movements (product_id, shard, delta, reason)"
            " values (%s, 7, 1, 'restock')",
            [product],
        )
    # the product row of a product in flash-sale mode holds nothing
    with db.raises("23514"):
        db.conn.execute(
            "insert into core.inventory_movements (product_id, delta, reason) values (%s, 1, 'restock')",
            [product],
        )
    check_flash_invariants(db.conn, [product])


def test_staff_adjustments_and_returns_restock_the_shards(db: Session, staff: int, customer: int) -> None:
    product = new_product(db.conn, "T-RESTOCK", 100, 8)
    as_staff(db, staff)
    db.one("select api.update_product(%s, stock_shards => 4)", [product])
    assert db.one("select api.adjust_stock(%s, 6, 'restock')", [product])["stock"] == 14
    assert shards_of(db, product) == [(1, 4), (2, 4), (3, 3), (4, 3)]
    as_staff(db, staff)
    with db.raises("PT409") as info:
        db.one("select api.adjust_stock(%s, -15, 'correction')", [product])
    assert detail(info) == {
        "code": "insufficient_stock",
        "product_id": product,
        "requested": 15,
        "available": 14,
    }
    assert db.one("select api.adjust_stock(%s, -5, 'correction')", [product])["stock"] == 9
    as_customer(db, customer)
    order = db.one("select api.create_order(%s::jsonb)", [items((product, 9))])  # all of it, from every shard
    assert on_hand(db.conn, product) == 0
    as_customer(db, customer)
    with db.raises("PT409") as info:
        db.one("select api.create_order(%s::jsonb)", [items((product, 1))])
    assert (detail(info)["requested"], detail(info)["available"]) == (1, 0)
    as_customer(db, customer)
    db.one("select api.modify_order(%s, %s, 4)", [order["id"], product])
    assert on_hand(db.conn, product) == 5
    as_customer(db, customer)
    db.one("select api.cancel_order(%s)", [order["id"]])
    assert on_hand(db.conn, product) == 9
    check_flash_invariants(db.conn, [product])


# --- the property ------------------------------------------------------------------------------------------

INITIAL = 12
operation = st.one_of(
    st.tuples(st.just("shards"), st.integers(1, 8)),
    st.tuples(st.just("restock"), st.integers(-6, 9)),
    st.tuples(st.just("buy"), st.integers(1, 6)),
    st.tuples(st.just("modify"), st.integers(0, 5), st.integers(1, 6)),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
)


@dataclass
class Model:
    total: int = INITIAL
    shards: int = 1
    orders: list[tuple[int, int]] = field(default_factory=list)  # pending orders: (id, quantity)


def run(db: Session, model: Model, product: int, staff: int, customer: int, op: tuple[Any, ...]) -> None:
    """One operation, its outcome predicted by the model."""
    kind = op[0]
    if kind == "shards":
        set_shards(db.conn, staff, product, op[1])
        changed, model.shards = op[1] != model.shards, op[1]
        units = [units for _, units in shards_of(db, product)]
        assert len(units) == (op[1] if op[1] > 1 else 0)
        assert not (units and changed) or max(units) - min(units) <= 1  # a new split shares out evenly
    elif kind == "restock":
        as_staff(db, staff)
        if op[1] == 0 or model.total + op[1] < 0:
            with db.raises("PT422" if op[1] == 0 else "PT409"):
                db.one("select api.adjust_stock(%s, %s, 'adjustment')", [product, op[1]])
        else:
            db.one("select api.adjust_stock(%s, %s, 'adjustment')", [product, op[1]])
            model.total += op[1]
    elif kind == "buy":
        as_customer(db, customer)
        if op[1] > model.total:
            with db.raises("PT409") as info:
                db.one("select api.create_order(%s::jsonb)", [items((product, op[1]))])
            assert detail(info)["available"] == model.total
        else:
            model.orders.append(
                (db.one("select api.create_order(%s::jsonb)", [items((product, op[1]))])["id"], op[1])
            )
            model.total -= op[1]
    elif model.orders:
        index = op[1] % len(model.orders)
        order, held = model.orders[index]
        as_customer(db, customer)
        if kind == "cancel":
            db.one("select api.cancel_order(%s)", [order])
            model.orders.pop(index)
            model.total += held
        elif op[2] - held > model.total:
            with db.raises("PT409"):
                db.one("select api.modify_order(%s, %s, %s)", [order, product, op[2]])
        else:
            db.one("select api.modify_order(%s, %s, %s)", [order, product, op[2]])
            model.orders[index] = (order, op[2])
            model.total -= op[2] - held


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(operation, min_size=1, max_size=12))
def test_any_sequence_keeps_the_total_the_shards_and_the_ledger_in_agreement(
    db: Session, staff: int, customer: int, operations: list[tuple[Any, ...]]
) -> None:
    with db.conn.transaction(force_rollback=True):
        no_order_limits(db.conn)
        product = new_product(db.conn, "T-PROPERTY", 250, INITIAL)
        model = Model()
        for op in operations:
            run(db, model, product, staff, customer, op)
            assert on_hand(db.conn, product) == model.total
            assert db.one("select stock_shards from core.products where id = %s", [product]) == model.shards
            check_flash_invariants(db.conn, [product])


def test_an_expired_order_gives_its_units_back_to_the_shards(db: Session, staff: int, customer: int) -> None:
    product = new_product(db.conn, "T-EXPIRING", 300, 12)
    as_staff(db, staff)
    db.one("select api.update_product(%s, stock_shards => 3)", [product])
    as_customer(db, customer)
    order = db.one("select api.create_order(%s::jsonb)", [items((product, 5))])["id"]
    assert on_hand(db.conn, product) == 7
    db.as_superuser()
    db.conn.execute("update core.orders set created_at = now() - interval '2 hours' where id = %s", [order])
    as_dba(db)
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 1
    assert on_hand(db.conn, product) == 12
    returned = db.all(
        "select shard, delta from core.inventory_movements where order_id = %s and reason = 'order_expired'",
        [order],
    )
    assert [(delta, shard is not None) for shard, delta in returned] == [(5, True)]
    check_flash_invariants(db.conn, [product])
