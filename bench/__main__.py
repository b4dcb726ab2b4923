"""`make bench`: the gateway beside pgbench on the same SQL, as the same roles, in the same run.

    python -m bench [--seconds 10] [--connections 16] [--products 10000] [--workers 2]

Writes bench/results/gateway.json and bench/results/README.md (a markdown table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from importlib import metadata
from typing import Any

from bench import harness


def workload_pairs(args: argparse.Namespace) -> dict[str, Any]:
    """Catalog reads and order creation, through the gateway (wrk) and straight into PostgreSQL (pgbench)."""
    results: dict[str, Any] = {}
    with harness.database(args.products) as db:
        harness.restock_everything(db.admin_url, 10_000_000)
        with harness.gateway(db, workers=args.workers, pool_max=args.connections) as gw:
            buyer = harness.customer(gw, "bench-buyer@bench.example")
            products = str(args.products or 48)
            runs = {
                "catalog_read": (
                    lambda: harness.pgbench(
                        db.authenticator_url,
                        harness.SCRIPTS / "catalog.sql",
                        clients=args.connections,
                        seconds=args.seconds,
                    ),
                    lambda: harness.wrk(
                        gw.base_url,
                        harness.SCRIPTS / "catalog.lua",
                        connections=args.connections,
                        seconds=args.seconds,
                    ),
                    "GET /products?limit=20 (anonymous)",
                ),
                "order_create": (
                    lambda: harness.pgbench(
                        db.authenticator_url,
                        harness.SCRIPTS / "orders.sql",
                        clients=args.connections,
                        seconds=args.seconds,
                        variables={
                            "products": products,
                            "jti": buyer.jti,
                            "user_id": str(buyer.user_id),
                            "claims": buyer.claims,
                        },
                    ),
                    lambda: harness.wrk(
                        gw.base_url,
                        harness.SCRIPTS / "orders.lua",
                        connections=args.connections,
                        seconds=args.seconds,
                        env={"BENCH_PRODUCTS": products, "BENCH_TOKEN": buyer.token},
                    ),
                    "POST /orders, one line (customer, Bearer)",
                ),
            }
            for name, (run_pgbench, run_wrk, what) in runs.items():
                print(f"{name}: pgbench ...", file=sys.stderr, flush=True)
                database_side = run_pgbench()
                print(f"{name}: gateway ...", file=sys.stderr, flush=True)
                gateway_side = run_wrk()
                results[name] = {
                    "what": what,
                    "connections": args.connections,
                    "pgbench": database_side.as_dict(),
                    "gateway": gateway_side.as_dict(),
                    "ratio": round(gateway_side.per_second / database_side.per_second, 3)
                    if database_side.per_second
                    else None,
                }
        results["_server_version"] = harness.server_version(db.admin_url)
    return results


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Measured {result['finished_at']} on {m['cores']} cores, {m['memory_gib']} GiB ({m['cpu']}), "
        f"PostgreSQL {result['versions']['postgresql']}, {result['connections']} connections, "
        f"{result['seconds']} s per run: `{result['command']}`",
        "",
        "| workload | pgbench tx/s | gateway req/s | ratio | pgbench p50 / p99 ms | gateway p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["workloads"].items():
        pg, gw = row["pgbench"], row["gateway"]
        lines.append(
            f"| {name} | {pg['per_second']:.0f} | {gw['per_second']:.0f} | {row['ratio']} | "
            f"{pg['p50_ms']:.1f} / {pg['p99_ms']:.1f} | {gw['p50_ms']:.1f} / {gw['p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients, the same for both")
    parser.add_argument("--products", type=int, default=10_000, help="generated catalog size")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    try:
        harness.ensure_wrk()
        workloads = workload_pairs(args)
    except harness.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server = workloads.pop("_server_version")
    result = {
        "name": "gateway",
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "versions": {
            "postgresql": server,
            "commercecore-dbx": metadata.version("commercecore-dbx"),
            "psycopg": metadata.version("psycopg"),
            "starlette": metadata.version("starlette"),
            "uvicorn": metadata.version("uvicorn"),
        },
        "connections": args.connections,
        "seconds": args.seconds,
        "products": args.products,
        "gateway_workers": args.workers,
        "workloads": workloads,
    }
    path = harness.write_result("gateway", result)
    table = markdown(result)
    (harness.RESULTS / "README.md").write_text("# Latest benchmark results\n\n" + table)
    print(table)
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
