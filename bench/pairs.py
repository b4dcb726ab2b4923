"""`gateway`: catalog reads and order creation through the gateway (wrk) beside pgbench running the same SQL
as the same roles, in the same run.

pgbench runs twice per workload: `-M extended` (unnamed statements, parsed and planned on every
execution: the reference the targets were set against) and `-M prepared` (named prepared statements, as
the gateway now sends them: the database's ceiling for this SQL). Both ratios are reported; `ratio` is
against the workload's reference. The three take turns for `--rounds` rounds and the median of each is
compared. Orders are placed by one buyer per client (pgbench) or connection (wrk): see harness.buyers.

`catalog_read` and `order_create` run on a gateway with the catalog cache off (every read goes to the
database, as pgbench's does); `catalog_read_cached` (the same read, served warm from the catalog cache,
against pgbench `-M prepared`) and `catalog_mixed` (the read, and one request in twenty an order that moves
stock) on a second gateway with the cache on, as a shop runs it, each with the cache's hit rate over its
gateway runs.
"""

from __future__ import annotations

import argparse
import os
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
    sql_scripts: tuple[tuple[str, int], ...]  # pgbench's scripts with their weights
    variables: dict[str, str]
    lua_script: str
    env: dict[str, str]
    cached: bool = False  # on the gateway with the catalog cache on
    reference: str = "extended"  # the pgbench mode `ratio` is against


# one request in this many of the mixed workload is an order
MIXED_ORDER_WEIGHT = 5


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
    orders = {"first_id": first_id, "last_id": last_id, **harness.UNREAD_BUYER, **limits.variables()}
    tokens = harness.tokens(buyers)
    buyers_env = {"BENCH_FIRST_ID": first_id, "BENCH_LAST_ID": last_id, "BENCH_TOKENS": tokens}
    read = "GET /products?limit=20 (anonymous)"
    return {
        "catalog_read": Workload(read + ", catalog cache off", (("catalog.sql", 1),), {}, "catalog.lua", {}),
        "order_create": Workload(
            "POST /orders, one line of a random product (customers, Bearer, one per connection)",
            (("orders.sql", 1),),
            orders,
            "orders.lua",
            buyers_env,
        ),
        "catalog_read_cached": Workload(
            read + ", served from the catalog cache",
            (("catalog.sql", 1),),
            {},
            "catalog.lua",
            {},
            cached=True,
            reference="prepared",
        ),
        "catalog_mixed": Workload(
            f"{read}, and {MIXED_ORDER_WEIGHT}% POST /orders moving stock (catalog cache on)",
            (("catalog.sql", 100 - MIXED_ORDER_WEIGHT), ("orders.sql", MIXED_ORDER_WEIGHT)),
            orders,
            "catalog_mixed.lua",
            {**buyers_env, "BENCH_ORDER_PERCENT": str(MIXED_ORDER_WEIGHT)},
            cached=True,
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    limits = order_limits(args.products)
    # both gateways sign with one secret: the buyers' tokens work on either
    secret = {"COMMERCECORE_JWT_SECRET": os.urandom(32).hex()}
    with harness.database(args.products) as db:
        harness.restock_everything(db.admin_url, 10_000_000)
        products = harness.product_ids(db.admin_url)
        uncached = {**secret, "COMMERCECORE_CATALOG_CACHE_BYTES": "0"}
        with harness.gateway(db, workers=args.workers, pool=args.pool, limits=limits, env=uncached) as gw:
            buyers = harness.buyers(gw, db, args.connections, "bench-buyer")
            chosen = workloads(products, buyers, limits)
            for name, workload in chosen.items():
                if not workload.cached:
                    results[name] = measure(db, gw, args, name, workload)
        with harness.gateway(db, workers=args.workers, pool=args.pool, limits=limits, env=secret) as gw:
            for name, workload in chosen.items():
                if workload.cached:
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
        "target": "ratio >= 0.5 (vs pgbench extended); catalog_read_cached >= 1.5 (vs pgbench prepared)",
        "workloads": results,
    }


def measure(
    db: harness.Database, gw: harness.Gateway, args: argparse.Namespace, name: str, workload: Workload
) -> dict[str, Any]:
    """pgbench (extended, prepared) and the gateway take turns, `rounds` times: a slow spell of the machine
    (another tenant, a checkpoint) falls on all of them, and the median of each side is what is compared."""
    rounds: dict[str, list[harness.Measurement]] = {"extended": [], "prepared": [], "gateway": []}
    scripts = [(harness.SCRIPTS / script, weight) for script, weight in workload.sql_scripts]
    cache_before = cache_counts(gw)
    for number in range(1, args.rounds + 1):
        for mode in ("extended", "prepared"):
            print(f"{NAME}: {name}: round {number}: pgbench -M {mode} ...", file=sys.stderr, flush=True)
            rounds[mode].append(
                harness.pgbench(
                    db.authenticator_url,
                    scripts,
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
        "reference": workload.reference,
        "ratio": _ratio(sides["gateway"], sides[workload.reference]),
        "ratio_extended": _ratio(sides["gateway"], sides["extended"]),
        "ratio_prepared": _ratio(sides["gateway"], sides["prepared"]),
        "cache": _hit_rate(cache_before, cache_counts(gw)) if workload.cached else None,
        "rounds": {side: [run.as_dict() for run in runs] for side, runs in rounds.items()},
    }


CACHE_COUNTERS = ("hits", "misses", "bypasses", "evictions")


def cache_counts(gw: harness.Gateway) -> dict[str, float]:
    """The catalog cache's counters, summed over the gateway's workers."""
    samples = harness.metrics(gw.base_url)
    return {name: samples.get(f"commercecore_catalog_cache_{name}_total", 0.0) for name in CACHE_COUNTERS}


def _hit_rate(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the cache did over a workload's gateway runs: its counters, and hits per catalog read."""
    counts = {name: int(after[name] - before[name]) for name in CACHE_COUNTERS}
    reads = counts["hits"] + counts["misses"] + counts["bypasses"]
    return {**counts, "hit_rate": round(counts["hits"] / reads, 4) if reads else None}


def _ratio(gateway: harness.Measurement, database: harness.Measurement) -> float | None:
    return round(gateway.per_second / database.per_second, 3) if database.per_second else None


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['connections']} connections, {result['rounds']} alternating rounds of "
        f"{result['seconds']} s per side (medians), {result['products']} products, "
        f"gateway: {result['gateway_workers']} uvicorn workers x {result['gateway_pool_per_worker']} "
        f"pooled connections. Target: {result['target']}." + _limits_note(result.get("order_limits")),
        "",
        "| workload | pgbench tx/s (extended / prepared) | gateway req/s | ratio (vs extended / prepared) "
        "| cache hit rate | pgbench p50 / p99 ms | gateway p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["workloads"].items():
        pg, pgp, gw = row["pgbench"], row["pgbench_prepared"], row["gateway"]
        extended = row.get("ratio_extended", row["ratio"])
        ratios = (
            f"{extended} / **{row['ratio_prepared']}**"
            if row.get("reference") == "prepared"
            else f"**{extended}** / {row['ratio_prepared']}"
        )
        cache = row.get("cache") or {}
        hit_rate = "-" if cache.get("hit_rate") is None else f"{cache['hit_rate']:.1%}"
        lines.append(
            f"| {name} | {pg['per_second']:.0f} / {pgp['per_second']:.0f} | {gw['per_second']:.0f} | "
            f"{ratios} | {hit_rate} | {pg['p50_ms']:.1f} / {pg['p99_ms']:.1f} | "
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
