"""Flash-sale mode under real concurrency: 64 buyers on their own connections (the gateway's request
context), released together by a barrier, buy a product whose 1,000 units are kept in shards until they
are refused. Exactly the stock is sold, a buyer is refused only when all the shards together are short,
and units given back by cancels are sold again; orders of several products, flash-sale or not, in any
order, never deadlock."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from tests.db.flash import check_flash_invariants, on_hand, set_shards
from tests.db.shop import detail, items, new_product, new_user, no_order_limits_in_database, request
from tests.db.test_orders_concurrency import BARRIER_TIMEOUT, outcome, role_settings, run_threads

BUYERS = 64
UNITS = 1000
SHARDS = 16


def flash_sale(url: str, sku: str, units: int = UNITS, shards: int = SHARDS) -> tuple[int, list[int]]:
    """A product of `units` units in `shards` shards, and BUYERS customers (no limits on unpaid orders: each
    buys many units)."""
    no_order_limits_in_database(url)
    with psycopg.connect(url, autocommit=True) as setup:
        staff = new_user(setup, f"{sku.lower()}-staff@example.com", "app_admin")
        product = new_product(setup, sku, 500, units)
        set_shards(setup, staff, product, shards)
        buyers = [new_user(setup, f"{sku.lower()}-{n}@example.com") for n in range(BUYERS)]
    return product, buyers


Order = Callable[[int, int | None], str]
RETRIES = 5


def as_the_gateway(conn: psycopg.Connection[Any], work: Callable[[], Any]) -> Any:
    """Runs work() in a transaction, again after a serialization failure (40001), as the gateway does: an
    order may meet a shard emptied under it while it held another out of order."""
    for attempt in range(RETRIES):
        try:
            with conn.transaction():
                return work()
        except psycopg.errors.SerializationFailure:
            if attempt == RETRIES - 1:
                raise
    return None


def buy_until_refused(
    url: str, buyer: int, settings: dict[str, dict[str, str]], order: Order, barrier: threading.Barrier
) -> dict[str, Any]:
    """One buyer's orders until a refusal with nothing available: `order(attempt, available)` gives the items
    of each, `available` being what the last refusal said was left (None after a success)."""
    sold, refusals = 0, []
    available: int | None = None
    claims = {"sub": str(buyer), "role": "app_readwrite"}
    with psycopg.connect(url, autocommit=True) as conn:
        barrier.wait()
        attempt = 0
        while available != 0:

            def place(body: str = order(attempt, available)) -> Any:
                request(conn, "app_readwrite", claims, settings)
                return conn.execute("select api.create_order(%s::jsonb)", [body]).fetchone()

            try:
                row = as_the_gateway(conn, place)
                assert row is not None
                sold += row[0]["items"][0]["quantity"]
                available = None
            except psycopg.Error as exc:
                if outcome(exc) != ("PT409", "insufficient_stock"):
                    raise
                refusals.append(detail(exc))
                available = int(detail(exc)["available"])
            attempt += 1
    return {"sold": sold, "refusals": refusals}


def assert_sold_out(url: str, product: int, results: list[dict[str, Any]], units: int = UNITS) -> None:
    # a refusal says what was available under the locks of every shard: never enough, and at the end nothing
    for result in results:
        for refusal in result["refusals"]:
            assert refusal["available"] < refusal["requested"], refusal
        assert result["refusals"][-1]["available"] == 0
    with psycopg.connect(url, autocommit=True) as check:
        assert on_hand(check, product) == 0
        held = check.execute(
            "select coalesce(sum(i.quantity), 0) from core.order_items as i"
            " join core.orders as o on o.id = i.order_id where i.product_id = %s and o.status = 'pending'",
            [product],
        ).fetchone()
        assert held == (units,)
        check_flash_invariants(check, [product])


def test_64_buyers_of_one_unit_sell_exactly_the_stock(fresh_db: str) -> None:
    product, buyers = flash_sale(fresh_db, "T-DROP")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        settings = role_settings(conn)
    barrier = threading.Barrier(BUYERS, timeout=BARRIER_TIMEOUT)
    one = items((product, 1))
    results = run_threads(
        BUYERS, lambda n: buy_until_refused(fresh_db, buyers[n], settings, lambda *_: one, barrier)
    )
    assert sum(result["sold"] for result in results) == UNITS
    # every buyer was refused once, at the end, with nothing left
    assert [len(result["refusals"]) for result in results] == [1] * BUYERS
    assert_sold_out(fresh_db, product, results)


def test_mixed_quantities_sell_exactly_the_stock(fresh_db: str) -> None:
    product, buyers = flash_sale(fresh_db, "T-MIXED")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        settings = role_settings(conn)
    barrier = threading.Barrier(BUYERS, timeout=BARRIER_TIMEOUT)

    def shopper(n: int) -> dict[str, Any]:
        rng = random.Random(n)

        def order(_: int, available: int | None) -> str:
            # after a refusal, at most what was left then: the last units may sit in different shards
            wanted = rng.randint(1, 7)
            return items((product, wanted if available is None else min(wanted, available)))

        return buy_until_refused(fresh_db, buyers[n], settings, order, barrier)

    results = run_threads(BUYERS, shopper)
    assert sum(result["sold"] for result in results) == UNITS
    assert_sold_out(fresh_db, product, results)


def test_units_given_back_by_cancels_are_sold_again(fresh_db: str) -> None:
    product, buyers = flash_sale(fresh_db, "T-CANCEL")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        settings = role_settings(conn)
    cancellers = 8
    barrier = threading.Barrier(BUYERS + cancellers, timeout=BARRIER_TIMEOUT)
    one = items((product, 1))

    def cancel_some(n: int) -> int:
        # a buyer of its own places 20 orders of 2 units while the sale runs and cancels every other one
        claims = {"sub": str(buyers[n]), "role": "app_readwrite"}
        cancelled = 0
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            barrier.wait()
            for attempt in range(20):

                def place_and_cancel(cancel: bool = bool(attempt % 2)) -> int:
                    request(conn, "app_readwrite", claims, settings)
                    body = items((product, 2))
                    row = conn.execute("select api.create_order(%s::jsonb)", [body]).fetchone()
                    assert row is not None
                    if cancel:
                        conn.execute("select api.cancel_order(%s)", [row[0]["id"]])
                        return 2
                    return 0

                try:
                    cancelled += as_the_gateway(conn, place_and_cancel)
                except psycopg.Error as exc:
                    if outcome(exc) != ("PT409", "insufficient_stock"):
                        raise
        return cancelled

    def work(n: int) -> Any:
        if n >= BUYERS:
            return cancel_some(n - BUYERS)
        return buy_until_refused(fresh_db, buyers[n], settings, lambda *_: one, barrier)

    results = run_threads(BUYERS + cancellers, work)
    buying = results[:BUYERS]
    for result in buying:
        for refusal in result["refusals"]:
            assert refusal["available"] < refusal["requested"], refusal
    with psycopg.connect(fresh_db, autocommit=True) as check:
        held = check.execute(
            "select coalesce(sum(i.quantity), 0) from core.order_items as i"
            " join core.orders as o on o.id = i.order_id where i.product_id = %s and o.status = 'pending'",
            [product],
        ).fetchone()
        assert held is not None
        # every unit is either held by a pending order or on hand, and cancels gave units back
        assert on_hand(check, product) + int(held[0]) == UNITS
        assert sum(results[BUYERS:]) > 0
        cancelled = check.execute(
            "select count(*) from core.inventory_movements where product_id = %s and reason = 'order_cancel'",
            [product],
        ).fetchone()
        assert cancelled is not None
        assert cancelled[0] > 0
        check_flash_invariants(check, [product])


def test_orders_of_several_products_in_any_order_never_deadlock(fresh_db: str) -> None:
    threads, rounds = 16, 12
    no_order_limits_in_database(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        staff = new_user(setup, "mixed-staff@example.com", "app_admin")
        products = [new_product(setup, f"T-MIX{n}", 100 + n, 500) for n in range(6)]
        for product in products[::2]:  # every other one in flash-sale mode
            set_shards(setup, staff, product, 4)
        users = [new_user(setup, f"mixed{n}@example.com") for n in range(threads)]
        settings = role_settings(setup)
    barrier = threading.Barrier(threads, timeout=BARRIER_TIMEOUT)

    def shop(n: int) -> list[tuple[str | None, str]]:
        rng = random.Random(n)
        claims = {"sub": str(users[n]), "role": "app_readwrite"}
        seen: list[tuple[str | None, str]] = []
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            barrier.wait()
            for _ in range(rounds):
                # products in any order: the lock order is the database's business
                chosen = rng.sample(products, rng.randint(2, 6))
                body = items(*[(p, rng.randint(1, 3)) for p in chosen])
                then = (rng.random(), rng.choice(chosen), rng.randint(1, 4))

                def place(body: str = body, then: tuple[float, int, int] = then) -> None:
                    request(conn, "app_readwrite", claims, settings)
                    row = conn.execute("select api.create_order(%s::jsonb)", [body]).fetchone()
                    assert row is not None
                    if then[0] < 0.3:
                        conn.execute("select api.cancel_order(%s)", [row[0]["id"]])
                    elif then[0] < 0.5:
                        conn.execute("select api.modify_order(%s, %s, %s)", [row[0]["id"], then[1], then[2]])

                try:
                    as_the_gateway(conn, place)
                    seen.append(("ok", ""))
                except psycopg.Error as exc:
                    seen.append(outcome(exc))
        return seen

    outcomes = [o for result in run_threads(threads, shop) for o in result]
    assert {o for o in outcomes if o[0] != "ok"} <= {("PT409", "insufficient_stock")}, outcomes
    assert outcomes.count(("ok", "")) >= threads * rounds // 2
    with psycopg.connect(fresh_db, autocommit=True) as check:
        check_flash_invariants(check, products)
        held = dict(
            check.execute(
                "select i.product_id, sum(i.quantity) from core.order_items as i join core.orders as o"
                " on o.id = i.order_id where o.status = 'pending' group by 1"
            ).fetchall()
        )
        assert {p: on_hand(check, p) + int(held.get(p, 0)) for p in products} == dict.fromkeys(products, 500)
