"""`gateway`: catalog reads and order creation through the gateway (wrk) beside pgbench running the same SQL
as the same roles, in the same run.

pgbench runs twice per workload: `-M extended` (unnamed statements, parsed and planned on every
execution: the reference the targets were set against) and `-M prepared` (named prepared statements, as
the gateway now sends them: the database's ceiling for this SQL). Both ratios are reported. The three take
turns for `--rounds` rounds and the median of each is compared.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench import harness

NAME = "gateway"


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with harness.database(args.products) as db:
        harness.restock_everything(db.admin_url, 10_000_000)
        first_id, last_id = harness.product_ids(db.admin_url)
        with harness.gateway(db, workers=args.workers, pool=args.pool) as gw:
            buyer = harness.customer(gw, "bench-buyer@bench.example")
            ids = {"first_id": str(first_id), "last_id": str(last_id)}
            session = {"jti": buyer.jti, "user_id": str(buyer.user_id), "claims": buyer.claims}
            workloads = {
                "catalog_read": (
                    "GET /products?limit=20 (anonymous)",
                    "catalog.sql",
                    {},
                    "catalog.lua",
                    {},
                ),
                "order_create": (
                    "POST /orders, one line of a random product (customer, Bearer)",
                    "orders.sql",
                    {**ids, **session},
                    "orders.lua",
                    {
                        "BENCH_FIRST_ID": str(first_id),
                        "BENCH_LAST_ID": str(last_id),
                        "BENCH_TOKEN": buyer.token,
                    },
                ),
            }
            for name, (what, sql_script, variables, lua_script, env) in workloads.items():
                # the sides take turns, `rounds` times: a slow spell of the machine (another tenant, a
                # checkpoint) falls on all of them, and the median of each side is what is compared
                rounds: dict[str, list[harness.Measurement]] = {"extended": [], "prepared": [], "gateway": []}
                for number in range(1, args.rounds + 1):
                    for mode in ("extended", "prepared"):
                        print(
                            f"{NAME}: {name}: round {number}: pgbench -M {mode} ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        rounds[mode].append(
                            harness.pgbench(
                                db.authenticator_url,
                                harness.SCRIPTS / sql_script,
                                clients=args.connections,
                                seconds=args.seconds,
                                variables=variables,
                                mode=mode,
                            )
                        )
                    print(f"{NAME}: {name}: round {number}: gateway ...", file=sys.stderr, flush=True)
                    rounds["gateway"].append(
                        harness.wrk(
                            gw.base_url,
                            harness.SCRIPTS / lua_script,
                            connections=args.connections,
                            seconds=args.seconds,
                            env=env,
                        )
                    )
                sides = {side: harness.median(runs) for side, runs in rounds.items()}
                results[name] = {
                    "what": what,
                    "connections": args.connections,
                    "pgbench": sides["extended"].as_dict(),
                    "pgbench_prepared": sides["prepared"].as_dict(),
                    "gateway": sides["gateway"].as_dict(),
                    "ratio": _ratio(sides["gateway"], sides["extended"]),
                    "ratio_prepared": _ratio(sides["gateway"], sides["prepared"]),
                    "rounds": {side: [run.as_dict() for run in runs] for side, runs in rounds.items()},
                }
        server = harness.server_version(db.admin_url)
    return {
        "versions": harness.versions(server),
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "products": args.products,
        "gateway_workers": args.workers,
        "gateway_pool_per_worker": args.pool,
        "target": "gateway req/s >= 0.5 x pgbench tx/s for each workload",
        "workloads": results,
    }


def _ratio(gateway: harness.Measurement, database: harness.Measurement) -> float | None:
    return round(gateway.per_second / database.per_second, 3) if database.per_second else None


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['connections']} connections, {result['rounds']} alternating rounds of "
        f"{result['seconds']} s per side (medians), {result['products']} products, "
        f"gateway: {result['gateway_workers']} uvicorn workers x {result['gateway_pool_per_worker']} "
        "pooled connections. Target: ratio >= 0.5.",
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
