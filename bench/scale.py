"""`scale`: GET /products with a filter, at 10k, 100k and 1M products (sizes configurable).

The catalog grows in place (`commercecore.local.seed.generate_products`, COPY), is vacuumed, analysed and
checkpointed before each size, and warmed up with 3 s of keyset pages (not recorded). Two ways to page
through one category, through the gateway (wrk, random pages):
- keyset: `/products?category_id=eq.C&id=gt.N&order=id&limit=20`, a random category and starting id;
- offset (for contrast): `/products?category_id=eq.C&order=id&limit=20&offset=K`, a random page of the
  category (K up to the category's size).

Keyset pages run `--rounds` times per size and the run with the median p99 is reported (all are kept).
Target: keyset p99 at the largest size <= 2 x keyset p99 at the smallest.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import psycopg

from bench import harness
from commercecore.local import seed

NAME = "scale"
WARM_UP = 3  # seconds of keyset pages before each size's measurements
KEYSET = "/products?category_id=eq.{category}&id=gt.{id}&order=id&limit=20"
OFFSET = "/products?category_id=eq.{category}&order=id&limit=20&offset={offset}"


def _catalog(admin_url: str) -> dict[str, Any]:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("select count(*), min(id), max(id) from core.products where active").fetchone()
        categories = [
            (int(c), int(n))
            for c, n in conn.execute(
                "select category_id, count(*) from core.products where active and category_id is not null "
                "group by 1 order by 1"
            ).fetchall()
        ]
    assert row is not None
    return {
        "products": int(row[0]),
        "first_id": int(row[1]),
        "last_id": int(row[2]),
        "categories": categories,
    }


def _plan(admin_url: str, path_query: str) -> str:
    """The scans PostgreSQL plans for the gateway's statement of a sample page (as app_readonly, with the
    values written in: the custom plan)."""
    with psycopg.connect(admin_url) as conn:
        conn.execute("set local role app_readonly")
        rows = conn.execute("explain (format json) " + path_query).fetchone()
    assert rows is not None
    plan = rows[0][0]["Plan"]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            scans.append(f"{node['Node Type']} using {node['Index Name']}")
        elif node.get("Node Type", "").endswith("Scan") and "Relation Name" in node:
            scans.append(f"{node['Node Type']} on {node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return ", ".join(scans) or plan.get("Node Type", "?")


_PAGE_SQL = (
    "select coalesce(pg_catalog.json_agg(_t), '[]')::text, count(*), null::bigint from ("
    'select "id", "sku", "name", "description", "price_minor", "currency", "stock", "category_id", '
    '"created_at", "updated_at" from "api"."products" where "category_id" = {category}::bigint{keyset} '
    'order by "id" asc limit 20{offset}) _t'
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes: list[dict[str, Any]] = []
    with harness.database(0) as db:
        with harness.gateway(db, workers=args.workers, pool=args.pool) as gw:
            for size in sorted(args.sizes):
                current = _catalog(db.admin_url)["products"]
                if size > current:
                    print(f"{NAME}: generating {size - current} products ...", file=sys.stderr, flush=True)
                    seed.generate_products(db.admin_url, size - current)
                with psycopg.connect(db.admin_url, autocommit=True) as conn:
                    # the whole database: the generated ledger and audit rows too, or autovacuum would
                    # take them on during the measurement
                    conn.execute("vacuum analyze")
                    # the load's dirty pages written out now, not by a checkpoint during the measurement
                    conn.execute("checkpoint")
                catalog = _catalog(db.admin_url)
                env = {
                    "BENCH_FIRST_ID": str(catalog["first_id"]),
                    "BENCH_LAST_ID": str(catalog["last_id"]),
                    "BENCH_CATEGORIES": ",".join(str(c) for c, _n in catalog["categories"]),
                    "BENCH_MAX_OFFSET": str(max(0, min(n for _c, n in catalog["categories"]) - 20)),
                }
                category = catalog["categories"][0][0]
                middle = (catalog["first_id"] + catalog["last_id"]) // 2
                plans = {
                    "keyset": _plan(
                        db.admin_url,
                        _PAGE_SQL.format(category=category, keyset=f' and "id" > {middle}', offset=""),
                    ),
                    "offset": _plan(
                        db.admin_url,
                        _PAGE_SQL.format(
                            category=category, keyset="", offset=f" offset {env['BENCH_MAX_OFFSET']}"
                        ),
                    ),
                }
                row: dict[str, Any] = {"products": catalog["products"], "plans": plans}
                # warm-up, not recorded: every pooled connection has prepared its statements, the pages
                # a random page needs are as cached as they will be
                harness.wrk(
                    gw.base_url,
                    harness.SCRIPTS / "scale_pages.lua",
                    connections=args.scale_connections,
                    seconds=WARM_UP,
                    env={**env, "BENCH_PAGES": "keyset"},
                )
                # keyset pages `rounds` times, the run with the median p99 reported (a slow spell of the
                # machine is not a property of the catalog size); offset pages once, for contrast
                for kind, rounds in (("keyset", args.rounds), ("offset", 1)):
                    runs = []
                    for number in range(1, rounds + 1):
                        print(
                            f"{NAME}: {catalog['products']} products: {kind} pages, round {number} ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        runs.append(
                            harness.wrk(
                                gw.base_url,
                                harness.SCRIPTS / "scale_pages.lua",
                                connections=args.scale_connections,
                                seconds=args.seconds,
                                env={**env, "BENCH_PAGES": kind},
                            )
                        )
                    runs.sort(key=lambda run: run.p99_ms)
                    row[kind] = runs[(len(runs) - 1) // 2].as_dict()
                    row[f"{kind}_rounds"] = [run.as_dict() for run in runs]
                sizes.append(row)
        server = harness.server_version(db.admin_url)
    first, last = sizes[0], sizes[-1]
    ratio = (
        round(last["keyset"]["p99_ms"] / first["keyset"]["p99_ms"], 2) if first["keyset"]["p99_ms"] else None
    )
    return {
        "versions": harness.versions(server),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.scale_connections,
        "gateway_workers": args.workers,
        "gateway_pool_per_worker": args.pool,
        "keyset_url": KEYSET,
        "offset_url": OFFSET,
        "target": "keyset p99 at the largest size <= 2 x keyset p99 at the smallest",
        "sizes": sizes,
        "p99_ratio": ratio,
        "p99_ratio_sizes": [first["products"], last["products"]],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"GET /products filtered by category, 20 per page, random pages, {result['connections']} "
        f"connections, {result['seconds']} s per run; keyset: the run with the median p99 of "
        f"{result['rounds']}. Keyset: `{result['keyset_url']}`; "
        f"offset: `{result['offset_url']}`. "
        f"Target: keyset p99 ratio <= 2; measured p99({result['p99_ratio_sizes'][1]}) / "
        f"p99({result['p99_ratio_sizes'][0]}) = **{result['p99_ratio']}**.",
        "",
        "| products | keyset req/s | keyset p50 / p99 ms | offset req/s | offset p50 / p99 ms "
        "| plan (keyset; offset) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["sizes"]:
        k, o = row["keyset"], row["offset"]
        lines.append(
            f"| {row['products']} | {k['per_second']:.0f} | {k['p50_ms']:.1f} / {k['p99_ms']:.1f} | "
            f"{o['per_second']:.0f} | {o['p50_ms']:.1f} / {o['p99_ms']:.1f} | "
            f"{row['plans']['keyset']}; {row['plans']['offset']} |"
        )
    return "\n".join(lines) + "\n"
