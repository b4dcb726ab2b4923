"""`profile`: where the time of one order goes, statement by statement.

One client places a few hundred orders of one unit of a product drawn from 1000 (no queue), with the
gateway's SQL (scripts/orders_pipelined.sql, as `hot_sku` sends it), on a cluster with
`pg_stat_statements.track = all`, so that the statements inside `api.create_order` and its triggers are
counted beside the top-level ones. The result is the top statements by total time, with their mean, and the
top-level create_order's mean per order: the table to read before and after a change of the order path.

    python -m bench --only profile [--profile-orders 400]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from typing import Any

import psycopg

from bench import harness, hot_sku

NAME = "profile"
TOP = 20
SHOWN_CHARACTERS = 110


def _statements(admin_url: str) -> list[dict[str, Any]]:
    """The database's statements by total execution time (the top TOP), nested ones included."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            """
            select s.query, s.toplevel, s.calls, s.total_exec_time, s.mean_exec_time, s.wal_bytes / s.calls
            from ops.pg_stat_statements(true) as s
            where s.dbid = (select oid from pg_database where datname = current_database())
            order by s.total_exec_time desc
            limit %s
            """,
            [TOP],
        ).fetchall()
    return [
        {
            "statement": _shortened(str(query)),
            "toplevel": bool(toplevel),
            "calls": int(calls),
            "total_ms": round(float(total), 1),
            "mean_ms": round(float(mean), 4),
            "wal_bytes": int(wal),
        }
        for query, toplevel, calls, total, mean, wal in rows
    ]


def _shortened(query: str) -> str:
    one_line = re.sub(r"\s+", " ", query).strip()
    return one_line if len(one_line) <= SHOWN_CHARACTERS else one_line[: SHOWN_CHARACTERS - 1] + "…"


def run(args: argparse.Namespace) -> dict[str, Any]:
    orders = args.profile_orders
    with harness.database(hot_sku.SPREAD_PRODUCTS) as db:
        harness.restock_everything(db.admin_url, hot_sku.HOT_STOCK)
        span = harness.product_ids(db.admin_url)
        with harness.gateway(db, workers=1, pool=2, limits=hot_sku.LIMITS) as gw:
            harness.buyers(gw, db, 1, "bench-profile-buyer")
        variables = {
            **harness.UNREAD_BUYER,
            **hot_sku.LIMITS.variables(),
            "first_id": str(span[0]),
            "last_id": str(span[1]),
        }
        print(f"{NAME}: warming up ...", file=sys.stderr, flush=True)
        script = harness.SCRIPTS / "orders_pipelined.sql"
        harness.pgbench(db.authenticator_url, script, clients=1, transactions=50, variables=variables)
        harness.reset_statistics(db.admin_url)
        print(f"{NAME}: {orders} orders, one client ...", file=sys.stderr, flush=True)
        measured = harness.pgbench(
            db.authenticator_url, script, clients=1, transactions=orders, variables=variables
        )
        statements = _statements(db.admin_url)
        server = harness.server_version(db.admin_url)
    create_order = next(
        (s for s in statements if s["toplevel"] and "api.create_order" in s["statement"]), None
    )
    return {
        "versions": harness.versions(server),
        "orders": orders,
        "spread_products": hot_sku.SPREAD_PRODUCTS,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "transaction_ms": round(measured.p50_ms, 3),
        "create_order_mean_ms": create_order["mean_ms"] if create_order else None,
        "statements": statements,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['orders']} orders of one unit, one client (pgbench, the gateway's SQL), products drawn "
        f"from {result['spread_products']}; `pg_stat_statements.track = all`, so nested statements (inside "
        "functions and triggers) are counted beside the top-level ones, and their time is also part of "
        f"their caller's. Median transaction {result['transaction_ms']} ms; top-level create_order "
        f"{result['create_order_mean_ms']} ms per order.",
        "",
        "| statement | top level | calls | mean ms | total ms | WAL bytes per call |",
        "|---|:---:|---:|---:|---:|---:|",
    ]
    for row in result["statements"]:
        text = row["statement"].replace("|", "\\|")
        lines.append(
            f"| `{text}` | {'yes' if row['toplevel'] else ''} | {row['calls']} | {row['mean_ms']:.3f} "
            f"| {row['total_ms']:.1f} | {row.get('wal_bytes', '')} |"
        )
    return "\n".join(lines) + "\n"
