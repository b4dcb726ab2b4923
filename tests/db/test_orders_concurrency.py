"""Orders under real concurrency: parallel connections, each a request of its own as app_readwrite (the
gateway's request context), released together by a barrier. No oversell, no deadlock, and the stock
invariants hold afterwards."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from gateway import db as gwdb
from tests.db.shop import check_invariants, detail, items, new_product, new_user, request
from tests.ops.helpers import wait_until

BARRIER_TIMEOUT = 60


def role_settings(conn: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
    return gwdb.parse_role_settings(conn.execute(gwdb.ROLE_SETTINGS_QUERY).fetchall())


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs work(n) in `count` threads; returns their results, re-raising the first unexpected error."""
    results: list[Any] = [None] * count
    failures: list[BaseException] = []

    def target(n: int) -> None:
        try:
            results[n] = work(n)
        except BaseException as exc:  # surfaced in the test's thread below
            failures.append(exc)

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BARRIER_TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads), "a worker hangs"
    if failures:
        raise failures[0]
    return results


def outcome(exc: psycopg.Error) -> tuple[str | None, str]:
    code = ""
    if exc.diag.message_detail:
        try:
            code = str(detail(exc).get("code", ""))
        except ValueError:
            code = ""
    return exc.sqlstate, code


def test_fifty_buyers_race_for_the_last_ten_units(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        buyers = [new_user(setup, f"buyer{n}@example.com") for n in range(50)]
        product = new_product(setup, "T-LAST", 1999, 10)
        settings = role_settings(setup)
    barrier = threading.Barrier(len(buyers), timeout=BARRIER_TIMEOUT)

    def buy(n: int) -> Any:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            barrier.wait()
            try:
                with conn.transaction():
                    request(conn, "app_readwrite", {"sub": str(buyers[n]), "role": "app_readwrite"}, settings)
                    row = conn.execute("select api.create_order(%s::jsonb)", [items((product, 1))]).fetchone()
                    assert row is not None
                    return ("ok", row[0]["id"])
            except psycopg.Error as exc:
                return (*outcome(exc), detail(exc))

    results = run_threads(len(buyers), buy)
    won = [r for r in results if r[0] == "ok"]
    lost = [r for r in results if r[0] != "ok"]
    assert len(won) == 10
    assert len(lost) == 40
    assert {(state, code) for state, code, _ in lost} == {("PT409", "insufficient_stock")}
    assert {(d["product_id"], d["requested"], d["available"]) for _, _, d in lost} == {(product, 1, 0)}
    with psycopg.connect(fresh_db, autocommit=True) as check:
        assert check.execute("select stock from core.products where id = %s", [product]).fetchone() == (0,)
        assert check.execute(
            "select count(distinct user_id), count(*) from core.orders where status = 'pending'"
        ).fetchone() == (10, 10)
        check_invariants(check, [product], {product: 10})


def test_random_orders_changes_and_cancels_never_deadlock_or_oversell(fresh_db: str) -> None:
    threads, operations, customers = 16, 200, 8
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        users = [new_user(setup, f"shopper{n}@example.com") for n in range(customers)]
        products = [new_product(setup, f"T-P{n:02}", 100 + 37 * n, 40) for n in range(20)]
        settings = role_settings(setup)
    barrier = threading.Barrier(threads, timeout=BARRIER_TIMEOUT)
    # two threads per customer, so one customer's orders are changed by two connections at once
    shares = [operations // threads + (1 if n < operations % threads else 0) for n in range(threads)]

    def shop(n: int) -> Counter[tuple[str, str | None, str]]:
        rng = random.Random(1000 + n)
        user = users[n % customers]
        claims = {"sub": str(user), "role": "app_readwrite"}
        tally: Counter[tuple[str, str | None, str]] = Counter()
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            barrier.wait()
            for _ in range(shares[n]):
                kind = rng.choices(["create", "modify", "delete", "cancel"], weights=[45, 25, 15, 15])[0]
                try:
                    with conn.transaction():
                        request(conn, "app_readwrite", claims, settings)
                        pending = [
                            row[0]
                            for row in conn.execute("select id from api.orders where status = 'pending'")
                        ]
                        if kind == "create" or not pending:
                            kind = "create"
                            # items in any order: the lock order is the database's business
                            chosen = rng.sample(products, rng.randint(1, 6))
                            body = items(*[(p, rng.randint(1, 8)) for p in chosen])
                            conn.execute("select api.create_order(%s::jsonb)", [body])
                        elif kind == "modify":
                            args = [rng.choice(pending), rng.choice(products), rng.randint(1, 8)]
                            conn.execute("select api.modify_order(%s, %s, %s)", args)
                        elif kind == "delete":
                            order = rng.choice(pending)
                            lines = [
                                row[0]
                                for row in conn.execute(
                                    "select product_id from api.order_items where order_id = %s", [order]
                                )
                            ]
                            conn.execute(
                                "select api.delete_product_in_order(%s, %s)",
                                [order, rng.choice(lines or products)],
                            )
                        else:
                            conn.execute("select api.cancel_order(%s)", [rng.choice(pending)])
                    tally[(kind, "ok", "")] += 1
                except psycopg.Error as exc:
                    tally[(kind, *outcome(exc))] += 1
        return tally

    tallies = run_threads(threads, shop)
    total: Counter[tuple[str, str | None, str]] = sum(tallies, Counter())
    assert sum(total.values()) == operations
    errors = {key: count for key, count in total.items() if key[1] != "ok"}
    expected = {
        ("PT409", "insufficient_stock"),  # the stock ran out
        ("PT409", "order_not_editable"),  # the customer's other connection cancelled it first
        ("PT404", "not_found"),  # the other connection deleted the line first
        # the customer's limits on unpaid orders: their lock comes first in the lock order, and must never
        # deadlock either
        ("PT409", "too_many_open_orders"),
        ("PT409", "per_customer_limit"),
    }
    assert {(state, code) for _, state, code in errors} <= expected, errors
    assert not any(state == "40P01" for _, state, _ in errors)
    # the workload did what it says: every kind of change succeeded many times
    for kind in ("create", "modify", "delete", "cancel"):
        assert total[(kind, "ok", "")] >= 5, total
    with psycopg.connect(fresh_db, autocommit=True) as check:
        check_invariants(check, products, dict.fromkeys(products, 40))
        live = check.execute("select count(*) from core.orders where status = 'pending'").fetchone()
        assert live is not None
        assert live[0] > 0


def test_concurrent_requests_with_one_idempotency_key_place_one_order(fresh_db: str) -> None:
    clients = 8
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        user = new_user(setup, "retrier@example.com")
        product = new_product(setup, "T-ONCE", 700, 50)
        settings = role_settings(setup)
    barrier = threading.Barrier(clients, timeout=BARRIER_TIMEOUT)
    body = items((product, 3))

    def send(_: int) -> tuple[int, bool]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            barrier.wait()
            with conn.transaction():
                request(conn, "app_readwrite", {"sub": str(user), "role": "app_readwrite"}, settings)
                row = conn.execute(
                    "select api.create_order(%s::jsonb, idempotency_key => 'same-key'),"
                    " current_setting('response.headers', true)",
                    [body],
                ).fetchone()
                assert row is not None
                return row[0]["id"], {"Idempotent-Replayed": "true"} in json.loads(row[1])

    results = run_threads(clients, send)
    assert len({order_id for order_id, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * (clients - 1)
    with psycopg.connect(fresh_db, autocommit=True) as check:
        assert check.execute("select count(*) from core.orders").fetchone() == (1,)
        check_invariants(check, [product], {product: 50})
        assert check.execute("select stock from core.products where id = %s", [product]).fetchone() == (47,)


def test_a_product_taken_off_sale_while_a_buyer_waits_for_it_is_not_sold(fresh_db: str) -> None:
    """create_order checks its products before it locks them (the lock comes last, to keep it short) and
    again under the lock: a sale stopped by a transaction the buyer waited for fails the order whole."""
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        user = new_user(setup, "late@example.com")
        product = new_product(setup, "T-WITHDRAWN", 500, 5)
        settings = role_settings(setup)
    with psycopg.connect(fresh_db) as staff, psycopg.connect(fresh_db, autocommit=True) as observer:
        # staff stops the sale and holds the row until the buyer is seen waiting for it
        staff.execute("update core.products set active = false where id = %s", [product])

        def buy(_: int) -> tuple[str | None, str]:
            with psycopg.connect(fresh_db, autocommit=True) as conn:
                try:
                    with conn.transaction():
                        request(conn, "app_readwrite", {"sub": str(user), "role": "app_readwrite"}, settings)
                        conn.execute("select api.create_order(%s::jsonb)", [items((product, 2))])
                except psycopg.Error as exc:
                    return outcome(exc)
            return ("ok", "")

        outcomes: list[tuple[str | None, str]] = []
        buyer = threading.Thread(target=lambda: outcomes.append(buy(0)))
        buyer.start()
        wait_until(
            lambda: (
                observer.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like %s",
                    ["%create_order%"],
                ).fetchone()
                == (1,)
            ),
            what="the buyer waiting for the product's lock",
        )
        staff.commit()
        buyer.join(BARRIER_TIMEOUT)
    assert outcomes == [("PT422", "invalid_input")]
    with psycopg.connect(fresh_db, autocommit=True) as check:
        assert check.execute("select count(*) from core.orders").fetchone() == (0,)
        check_invariants(check, [product], {product: 5})
