"""Helpers of the DBA tooling tests: the CLI on a fresh click group, table checksums, orders via the API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import click
import psycopg
from click.testing import CliRunner, Result
from psycopg import sql

from commercecore.cli.ops import register

Snapshot = dict[str, Any]


def make_cli() -> click.Group:
    """`commercecore` with only the DBA commands, mounted the way commercecore/cli.py mounts them."""
    main = click.Group("commercecore")
    db = click.Group("db")
    main.add_command(db)
    register(main, db)
    return main


def cli(*args: str) -> Result:
    result = CliRunner().invoke(make_cli(), list(args))
    # expected failures exit through sys.exit; anything else would be a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def error_line(result: Result) -> str:
    """The single error line a failing command prints on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def snapshot(url: str) -> Snapshot:
    """Every table's row count and md5 of its rows (in a fixed order), sequence positions, database ACL."""
    tables: dict[str, tuple[int, str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute(
            """
            select n.nspname, c.relname
            from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p', 'm')
              and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
            order by 1, 2
            """
        ).fetchall()
        for schema, name in names:
            row = conn.execute(
                sql.SQL(
                    "select count(*), md5(coalesce(string_agg(t::text, E'\\n' order by t::text), ''))"
                    " from {}.{} as t"
                ).format(sql.Identifier(schema), sql.Identifier(name))
            ).fetchone()
            assert row is not None
            tables[f"{schema}.{name}"] = (int(row[0]), str(row[1]))
        sequences = dict(
            conn.execute(
                "select schemaname || '.' || sequencename, last_value from pg_sequences order by 1"
            ).fetchall()
        )
        acl = conn.execute(
            "select array_agg(format('%s=%s', a.grantee::regrole, a.privilege_type) order by 1)"
            " from pg_database as d cross join lateral aclexplode(d.datacl) as a"
            " where d.datname = current_database()"
        ).fetchone()
    return {"tables": tables, "sequences": sequences, "acl": acl[0] if acl else None}


def demo_customer(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select id from core.users where email = 'customer@demo.example'").fetchone()
    assert row is not None, "seed_demo first"
    return int(row[0])


def in_stock(conn: psycopg.Connection[Any], count: int, offset: int = 0) -> list[int]:
    rows = conn.execute(
        "select id from core.products where stock >= 5 and active order by id limit %s offset %s",
        [count, offset],
    ).fetchall()
    assert len(rows) == count
    return [int(row[0]) for row in rows]


def create_order(conn: psycopg.Connection[Any], user_id: int, items: list[tuple[int, int]]) -> int:
    """api.create_order as the customer would call it through the gateway (role and JWT claims)."""
    with conn.transaction():
        conn.execute(
            "select set_config('role', 'app_readwrite', true), set_config('request.jwt.claims', %s, true)",
            [json.dumps({"sub": str(user_id), "role": "app_readwrite"})],
        )
        row = conn.execute(
            "select api.create_order(%s::jsonb)",
            [json.dumps([{"product_id": p, "quantity": q} for p, q in items])],
        ).fetchone()
    assert row is not None
    return int(row[0]["id"])


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Waits for a state of the server (not for time): polls `condition` until it holds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.02)
