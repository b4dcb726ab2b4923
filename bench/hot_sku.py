"""`hot_sku`: many buyers of ONE product at once.

At each concurrency (8, 32, 64 by default):
- `api.create_order` of one unit of the hot product, by pgbench as customers' roles and claims (the
  gateway's SQL in the gateway's two pipelined batches, orders_pipelined.sql; unnamed statements, since
  pgbench prepares a pipeline's statements before its first one has set the role that may see `api`),
  and through the gateway (wrk, POST /orders); each client a buyer of its own (harness.buyers), so the
  clients queue on the product's row and not on one customer's lock;
- the same create_order spread over 1000 products (no buyer waits for another): what the machine can do
  with this function at all, so that the hot-SKU rate splits into the cost of the work (spread / bare) and
  the cost of the queue on one row (hot / spread);
- the floor of any "take one unit" design: a bare conditional UPDATE
  (`update ... set stock = stock - 1 where id = $1 and stock >= 1`) as the superuser, on a scratch copy of
  the product row (scratch.products: core.products' columns, constraints and indexes, no triggers);
- the same hot-product runs (pgbench and gateway) for a second product in flash-sale mode (its stock in
  FLASH_SHARDS shards, each buyer taking units from a shard it can lock without waiting), beside the
  gateway's spread run, so that flash_sale.ratio_hot_to_spread says what is left of the queue;
- after every run, the invariants: the product's stock (the product row plus its shards) equals its ledger
  sum, stock never went negative, and the units sold (initial stock - final stock) equal the units of the
  order lines written in the run (and the orders pgbench committed).

ratio = create_order orders/s (pgbench) / bare UPDATE rows/s, at the same concurrency. Targets, in the same
run: ratio_spread_to_bare >= 0.7; flash_sale.ratio_hot_to_spread >= 0.9; through the gateway, flash-sale
hot >= 0.8 x spread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench import harness

NAME = "hot_sku"
HOT_STOCK = 10_000_000
SPREAD_PRODUCTS = 1000  # generated products the spread run draws from
FLASH_SHARDS = 64  # the flash-sale product's shards: one per buyer at the highest level
# Every buyer takes unit after unit of the one hot product and never pays: both limits on unpaid orders
# lifted (their checks still run on every order), as no customer would come near them this way.
LIMITS = harness.OrderLimits(max_open_orders=harness.UNLIMITED, max_units_per_product=harness.UNLIMITED)


def _setup(admin_url: str) -> tuple[int, int]:
    """The hot product (the first demo product, restocked through the ledger) and its scratch copy, and the
    flash-sale product (the second, its stock put into FLASH_SHARDS shards as staff's PATCH does)."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("select min(id) from core.products where active").fetchone()
        assert row is not None
        assert row[0] is not None
        hot = int(row[0])
        row = conn.execute("select min(id) from core.products where active and id > %s", [hot]).fetchone()
        assert row is not None
        flash = int(row[0])
        conn.execute(
            "insert into core.inventory_movements (product_id, delta, reason, note) "
            "values (%s, %s, 'restock', 'benchmark: hot product'),"
            " (%s, %s, 'restock', 'benchmark: flash sale')",
            [hot, HOT_STOCK, flash, HOT_STOCK],
        )
        conn.execute("select core.set_stock_shards(%s, %s, null)", [flash, FLASH_SHARDS])
        conn.execute("create schema scratch")
        conn.execute("create table scratch.products (like core.products including all)")
        conn.execute(
            "insert into scratch.products"
            " (sku, name, description, price_minor, currency, stock, category_id)"
            " select sku, name, description, price_minor, currency, %s, category_id from core.products"
            " where id = %s",
            [HOT_STOCK, hot],
        )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("vacuum analyze scratch.products")
    return hot, flash


def _state(admin_url: str, product: int) -> dict[str, Any]:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            """
            select p.stock
                   + coalesce((select sum(s.units) from core.stock_shards as s where s.product_id = p.id), 0),
                   (select coalesce(sum(m.delta), 0) from core.inventory_movements as m
                    where m.product_id = p.id),
                   (select coalesce(sum(i.quantity), 0) from core.order_items as i where i.product_id = p.id),
                   (select count(*) from core.order_items as i where i.product_id = p.id)
            from core.products as p where p.id = %s
            """,
            [product],
        ).fetchone()
    assert row is not None
    return {"stock": int(row[0]), "ledger": int(row[1]), "units_in_orders": int(row[2]), "lines": int(row[3])}


def _invariants(
    before: dict[str, Any], after: dict[str, Any], committed: int, in_flight: int = 0
) -> dict[str, Any]:
    """`committed`: the orders the client saw succeed; `in_flight`: how many more may have been written
    after it stopped counting (wrk stops its clock with requests still on the way; pgbench waits)."""
    sold = before["stock"] - after["stock"]
    in_orders = after["units_in_orders"] - before["units_in_orders"]
    checks = {
        "stock_equals_ledger": after["stock"] == after["ledger"],
        "stock_not_negative": after["stock"] >= 0,
        "units_sold_equal_order_lines": sold == in_orders,
        "units_sold_equal_committed_orders": committed <= sold <= committed + in_flight,
    }
    return {
        "initial_stock": before["stock"],
        "final_stock": after["stock"],
        "ledger_sum": after["ledger"],
        "units_sold": sold,
        "units_in_new_order_lines": in_orders,
        "committed_orders": committed,
        "checks": checks,
        "ok": all(checks.values()),
    }


def _create_orders(
    db: harness.Database, variables: dict[str, str], clients: int, seconds: int, products: tuple[int, int]
) -> harness.Measurement:
    """create_order of one unit of a product drawn from products (first, last id) by pgbench, as the
    gateway sends it."""
    return harness.pgbench(
        db.authenticator_url,
        harness.SCRIPTS / "orders_pipelined.sql",
        clients=clients,
        seconds=seconds,
        variables={**variables, "first_id": str(products[0]), "last_id": str(products[1])},
    )


def _ratio(numerator: harness.Measurement, denominator: harness.Measurement) -> float | None:
    return round(numerator.per_second / denominator.per_second, 3) if denominator.per_second else None


@dataclass(frozen=True)
class Setup:
    """What every concurrency level of a run shares."""

    db: harness.Database
    gw: harness.Gateway
    seconds: int
    hot: int  # the hot product
    flash: int  # the product in flash-sale mode
    span: tuple[int, int]  # first and last id of the products the spread run draws from
    scratch_id: str  # the hot product's scratch copy, for the bare UPDATE
    buyers: list[harness.Customer]  # one per client at the highest level


def run(args: argparse.Namespace) -> dict[str, Any]:
    with harness.database(SPREAD_PRODUCTS) as db:
        harness.restock_everything(db.admin_url, HOT_STOCK)
        hot, flash = _setup(db.admin_url)
        span = harness.product_ids(db.admin_url)
        with psycopg.connect(db.admin_url) as conn:
            row = conn.execute("select id from scratch.products").fetchone()
        assert row is not None
        with harness.gateway(db, workers=args.workers, pool=args.pool, limits=LIMITS) as gw:
            buyers = harness.buyers(gw, db, max(args.hot_clients), "bench-hot-buyer")
            setup = Setup(db, gw, args.seconds, hot, flash, span, str(row[0]), buyers)
            levels = [_level(setup, clients) for clients in args.hot_clients]
        server = harness.server_version(db.admin_url)
    return {
        "versions": harness.versions(server),
        "seconds": args.seconds,
        "product": hot,
        "flash_sale_product": flash,
        "flash_sale_shards": FLASH_SHARDS,
        "spread_products": SPREAD_PRODUCTS,
        "gateway_workers": args.workers,
        "gateway_pool_per_worker": args.pool,
        "order_limits": LIMITS.variables(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": (
            "spread create_order orders/s >= 0.7 x bare conditional UPDATE rows/s; flash-sale hot >= 0.9 x "
            "spread (pgbench) and >= 0.8 x spread (gateway), at the same concurrency"
        ),
        "levels": levels,
        "invariants_ok": all(
            level["invariants_pgbench"]["ok"]
            and level["invariants_gateway"]["ok"]
            and level["flash_sale"]["invariants_pgbench"]["ok"]
            and level["flash_sale"]["invariants_gateway"]["ok"]
            for level in levels
        ),
    }


def _level(setup: Setup, clients: int) -> dict[str, Any]:
    """One concurrency: the bare UPDATE, create_order hot and spread (pgbench), POST /orders (gateway)."""
    db, variables = setup.db, {**harness.UNREAD_BUYER, **LIMITS.variables()}
    print(f"{NAME}: {clients} clients: bare UPDATE ...", file=sys.stderr, flush=True)
    bare = harness.pgbench(
        db.admin_url,
        harness.SCRIPTS / "hot_update.sql",
        clients=clients,
        seconds=setup.seconds,
        variables={"product": setup.scratch_id},
    )
    print(f"{NAME}: {clients} clients: create_order (pgbench) ...", file=sys.stderr, flush=True)
    before = _state(db.admin_url, setup.hot)
    orders = _create_orders(db, variables, clients, setup.seconds, (setup.hot, setup.hot))
    database_check = _invariants(before, _state(db.admin_url, setup.hot), orders.requests)
    print(f"{NAME}: {clients} clients: create_order, spread ...", file=sys.stderr, flush=True)
    spread = _create_orders(db, variables, clients, setup.seconds, setup.span)
    print(f"{NAME}: {clients} clients: POST /orders (gateway) ...", file=sys.stderr, flush=True)
    through_gateway, gateway_check = _through_gateway(setup, clients, setup.hot)
    return {
        "clients": clients,
        "bare_update": bare.as_dict(),
        "create_order_pgbench": orders.as_dict(),
        "create_order_spread": spread.as_dict(),
        "create_order_gateway": through_gateway.as_dict(),
        "ratio": _ratio(orders, bare),
        "ratio_spread_to_bare": _ratio(spread, bare),
        "ratio_hot_to_spread": _ratio(orders, spread),
        "ratio_gateway": _ratio(through_gateway, bare),
        "invariants_pgbench": database_check,
        "invariants_gateway": gateway_check,
        "flash_sale": _flash_sale(setup, clients, spread),
    }


def _flash_sale(setup: Setup, clients: int, spread: harness.Measurement) -> dict[str, Any]:
    """The same concurrency on the flash-sale product: create_order by pgbench and POST /orders through the
    gateway, against the spread runs of the same level (the gateway's spread run is made here)."""
    db, variables = setup.db, {**harness.UNREAD_BUYER, **LIMITS.variables()}
    print(f"{NAME}: {clients} clients: create_order, flash sale ...", file=sys.stderr, flush=True)
    before = _state(db.admin_url, setup.flash)
    orders = _create_orders(db, variables, clients, setup.seconds, (setup.flash, setup.flash))
    database_check = _invariants(before, _state(db.admin_url, setup.flash), orders.requests)
    print(
        f"{NAME}: {clients} clients: POST /orders (gateway), flash sale and spread ...",
        file=sys.stderr,
        flush=True,
    )
    through_gateway, gateway_check = _through_gateway(setup, clients, setup.flash)
    gateway_spread = harness.wrk(
        setup.gw.base_url,
        harness.SCRIPTS / "orders.lua",
        connections=clients,
        seconds=setup.seconds,
        env=_wrk_env(setup, clients, setup.span),
    )
    return {
        "orders_per_second": round(orders.per_second, 1),
        "create_order_pgbench": orders.as_dict(),
        "ratio_hot_to_spread": _ratio(orders, spread),
        "create_order_gateway": through_gateway.as_dict(),
        "create_order_gateway_spread": gateway_spread.as_dict(),
        "gateway_ratio_hot_to_spread": _ratio(through_gateway, gateway_spread),
        "invariants_pgbench": database_check,
        "invariants_gateway": gateway_check,
    }


def _wrk_env(setup: Setup, clients: int, products: tuple[int, int]) -> dict[str, str]:
    return {
        "BENCH_FIRST_ID": str(products[0]),
        "BENCH_LAST_ID": str(products[1]),
        "BENCH_TOKENS": harness.tokens(setup.buyers[:clients]),
    }


def _through_gateway(setup: Setup, clients: int, product: int) -> tuple[harness.Measurement, dict[str, Any]]:
    """POST /orders of one product by wrk, one buyer per connection, and the invariants after it."""
    before = _state(setup.db.admin_url, product)
    measured = harness.wrk(
        setup.gw.base_url,
        harness.SCRIPTS / "orders.lua",
        connections=clients,
        seconds=setup.seconds,
        env=_wrk_env(setup, clients, (product, product)),
    )
    time.sleep(1.0)  # the requests wrk left in flight finish
    check = _invariants(
        before,
        _state(setup.db.admin_url, product),
        measured.requests - measured.non_2xx,
        # and a socket error or timeout leaves it unknown whether its order was written
        in_flight=clients + measured.errors,
    )
    return measured, check


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"One product, {result['seconds']} s per run; the gateway has {result['gateway_workers']} workers x "
        f"{result['gateway_pool_per_worker']} pooled connections (so at most "
        f"{result['gateway_workers'] * result['gateway_pool_per_worker']} orders in flight in PostgreSQL). "
        "Target: ratio >= 0.7. Invariants (stock = ledger sum, units sold = initial - final = units in the "
        f"new order lines = committed orders, stock >= 0) after every run: "
        f"**{'all hold' if result['invariants_ok'] else 'VIOLATED'}**. "
        f"Spread: the same create_order over {result['spread_products']} products, no queue: "
        "spread / bare is the cost of the work, hot / spread the cost of the queue on one row.",
        "",
        "| buyers | bare UPDATE rows/s (p99 ms) | create_order hot orders/s (p99 ms) | ratio "
        "| create_order spread orders/s | spread / bare | hot / spread "
        "| POST /orders via gateway orders/s (p99 ms) | ratio (gateway) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in result["levels"]:
        bare, pg, gw = level["bare_update"], level["create_order_pgbench"], level["create_order_gateway"]
        spread = level["create_order_spread"]
        lines.append(
            f"| {level['clients']} | {bare['per_second']:.0f} ({bare['p99_ms']:.1f}) | "
            f"{pg['per_second']:.0f} ({pg['p99_ms']:.1f}) | **{level['ratio']}** | "
            f"{spread['per_second']:.0f} | {level['ratio_spread_to_bare']} | "
            f"{level['ratio_hot_to_spread']} | "
            f"{gw['per_second']:.0f} ({gw['p99_ms']:.1f}) | {level['ratio_gateway']} |"
        )
    return "\n".join(lines) + "\n\n" + _flash_markdown(result)


def _flash_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Flash-sale mode: a second product with its stock in {result['flash_sale_shards']} shards, the same "
        "buyers. Targets: flash / spread >= 0.9 (pgbench), >= 0.8 through the gateway.",
        "",
        "| buyers | flash sale orders/s (p99 ms) | flash / spread "
        "| POST /orders flash sale orders/s (p99 ms) | POST /orders spread orders/s "
        "| flash / spread (gateway) | invariants |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for level in result["levels"]:
        flash = level["flash_sale"]
        pg, gw = flash["create_order_pgbench"], flash["create_order_gateway"]
        ok = flash["invariants_pgbench"]["ok"] and flash["invariants_gateway"]["ok"]
        lines.append(
            f"| {level['clients']} | {pg['per_second']:.0f} ({pg['p99_ms']:.1f}) | "
            f"**{flash['ratio_hot_to_spread']}** | {gw['per_second']:.0f} ({gw['p99_ms']:.1f}) | "
            f"{flash['create_order_gateway_spread']['per_second']:.0f} | "
            f"**{flash['gateway_ratio_hot_to_spread']}** | {'hold' if ok else 'VIOLATED'} |"
        )
    return "\n".join(lines) + "\n"
