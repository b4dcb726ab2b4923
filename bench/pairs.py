"""`gateway`: catalog reads and order creation through the gateway (wrk) beside pgbench running the same SQL
as the same roles, in the same run.

pgbench runs twice per workload: `-M extended` (unnamed statements, parsed and planned on every
execution: the reference the targets were set against) and `-M prepared` (named prepared statements, as
the gateway now sends them: the database's ceiling for this SQL). Both ratios are reported. The three take
turns for `--rounds` rounds and the median of each is compared. Orders are placed by one buyer per client
(pgbench) or connection (wrk): see harness.buyers.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from bench import harness

NAME = "gateway"
# Each client orders as a buyer of its own, one unit of a random product of the catalog, and never pays.
# Its unpaid orders pile up by the thousand, as no customer's do: the open-order limit is lifted. Units
# of one product stay a handful per buyer in a catalog this large, so that limit stays the shop's.
REALISTIC_CATALOG = 1000


@dataclass(frozen=True)
class Workload:
    what: str
    sql_script: str
    variables: dict[str, str]
    lua_script: str
    env: dict[str, str]


def order_limits(products: int) -> harness.OrderLimits:
    realistic = products >= REALISTIC_CATALOG
    return harness.OrderLimits(
        max_open_orders=harness.UNLIMITED,
        max_units_per_product=harness.shop_default("max_units_per_product")
        if realistic
        else harness.UNLIMITED,
    )


def workloads(
    products: tuple[int, int], buyers: list[harness.Customer], limits: harness.OrderLimits
) -> dict[str, Workload]:
    first_id, last_id = (str(product) for product in products)
    return {
        "catalog_read": Workload("GET /products?limit=20 (anonymous)", "catalog.sql", {}, "catalog.lua", {}),
        "order_create": Workload(
            "POST /orders, one line of a random product (customers, Bearer, one per connection)",
            "orders.sql",
            {"first_id": first_id, "last_id": last_id, **harness.UNREAD_BUYER, **limits.variables()},
            "orders.lua",
            {"BENCH_FIRST_ID": first_id, "BENCH_LAST_ID": last_id, "BENCH_TOKENS": harness.tokens(buyers)},
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    limits = order_limits(args.products)
    with harness.database(args.products) as db:
        harness.restock_everything(db.admin_url, 10_000_000)
        products = harness.product_ids(db.admin_url)
        with harness.gateway(db, workers=args.workers, pool=args.pool, limits=limits) as gw:
            buyers = harness.buyers(gw, db, args.connections, "bench-buyer")
            for name, workload in workloads(products, buyers, limits).items():
                results[name] = measure(db, gw, args, name, workload)
        server = harness.server_version(db.admin_url)
    return {
        "versions": harness.versions(server),
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "products": args.products,
        "gateway_workers": args.workers,
        "gateway_pool_per_worker": args.pool,
        "order_limits": limits.variables(),
        "target": "gateway req/s >= 0.5 x pgbench tx/s for each workload",
        "workloads": results,
    }


def measure(
    db: harness.Database, gw: harness.Gateway, args: argparse.Namespace, name: str, workload: Workload
) -> dict[str, Any]:
    """pgbench (extended, prepared) and the gateway take turns, `rounds` times: a slow spell of the machine
    (another tenant, a checkpoint) falls on all of them, and the median of each side is what is compared."""
    rounds: dict[str, list[harness.Measurement]] = {"extended": [], "prepared": [], "gateway": []}
    for number in range(1, args.rounds + 1):
        for mode in ("extended", "prepared"):
            print(f"{NAME}: {name}: round {number}: pgbench -M {mode} ...", file=sys.stderr, flush=True)
            rounds[mode].append(
                harness.pgbench(
                    db.authenticator_url,
                    harness.SCRIPTS / workload.sql_script,
                    clients=args.connections,
                    seconds=args.seconds,
                    variables=workload.variables,
                    mode=mode,
                )
            )
        print(f"{NAME}: {name}: round {number}: gateway ...", file=sys.stderr, flush=True)
        rounds["gateway"].append(
            harness.wrk(
                gw.base_url,
                harness.SCRIPTS / workload.lua_script,
                connections=args.connections,
                seconds=args.seconds,
                env=workload.env,
            )
        )
    sides = {side: harness.median(runs) for side, runs in rounds.items()}
    return {
        "what": workload.what,
        "connections": args.connections,
        "pgbench": sides["extended"].as_dict(),
        "pgbench_prepared": sides["prepared"].as_dict(),
        "gateway": sides["gateway"].as_dict(),
        "ratio": _ratio(sides["gateway"], sides["extended"]),
        "ratio_prepared": _ratio(sides["gateway"], sides["prepared"]),
        "rounds": {side: [run.as_dict() for run in runs] for side, runs in rounds.items()},
    }


def _ratio(gateway: harness.Measurement, database: harness.Measurement) -> float | None:
    return round(gateway.per_second / database.per_second, 3) if database.per_second else None


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['connections']} connections, {result['rounds']} alternating rounds of "
        f"{result['seconds']} s per side (medians), {result['products']} products, "
        f"gateway: {result['gateway_workers']} uvicorn workers x {result['gateway_pool_per_worker']} "
        "pooled connections. Target: ratio >= 0.5." + _limits_note(result.get("order_limits")),
        "",
        "| workload | pgbench tx/s (extended / prepared) | gateway req/s | ratio (vs extended / prepared) "
        "| pgbench p50 / p99 ms | gateway p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["workloads"].items():
        pg, pgp, gw = row["pgbench"], row["pgbench_prepared"], row["gateway"]
        lines.append(
            f"| {name} | {pg['per_second']:.0f} / {pgp['per_second']:.0f} | {gw['per_second']:.0f} | "
            f"**{row['ratio']}** / {row['ratio_prepared']} | {pg['p50_ms']:.1f} / {pg['p99_ms']:.1f} | "
            f"{gw['p50_ms']:.1f} / {gw['p99_ms']:.1f} |"
        )
    errors = {
        name: row["gateway"]["errors"]
        for name, row in result["workloads"].items()
        if row["gateway"]["errors"]
    }
    if errors:
        lines += ["", f"Gateway errors (non-2xx or socket): {errors}."]
    return "\n".join(lines) + "\n"


def _limits_note(limits: dict[str, str] | None) -> str:
    if limits is None:  # a result from before the buyers had one client each
        return ""
    shown = {name: "off" if int(value) == harness.UNLIMITED else value for name, value in limits.items()}
    return (
        " Orders: one buyer per connection; limits on unpaid orders: "
        + ", ".join(f"{name} {value}" for name, value in shown.items())
        + "."
    )
