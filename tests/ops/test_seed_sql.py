"""The seed's monitoring SQL runs as typed in `commercecore pg psql`: the search path reaches ops (the views
and extensions) and core (the tables). Read as app_dba it runs too, and as app_admin it is refused: the
path widens no privilege."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

SEED_QUERIES = {
    "select * from pg_stat_statements": "total_exec_time",
    "select * from pg_stat_user_indexes": "indexrelname",
    "select * from pgstattuple('orders')": "dead_tuple_count",
}


def pg_psql(url: str, query: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`commercecore pg psql [options] -c QUERY` on the database of `url`, as a DBA types it."""
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("PGOPTIONS", None)
    return subprocess.run(
        [sys.executable, "-m", "commercecore.cli", "pg", "psql", *options, "-X", "-c", query],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("query", SEED_QUERIES)
def test_the_seed_monitoring_queries_run_as_typed(fresh_db: str, query: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("select count(*) from core.orders")  # something for pg_stat_statements to show
    result = pg_psql(fresh_db, query)
    assert result.returncode == 0, result.stderr
    assert SEED_QUERIES[query] in result.stdout.splitlines()[0]
    assert "(0 rows)" not in result.stdout


@pytest.mark.parametrize("query", SEED_QUERIES)
def test_app_dba_reads_them_too(fresh_db: str, query: str) -> None:
    result = pg_psql(fresh_db, query, "--role", "app_dba")
    assert result.returncode == 0, result.stderr
    assert SEED_QUERIES[query] in result.stdout.splitlines()[0]


def test_app_admin_gets_the_path_but_no_new_privilege(fresh_db: str) -> None:
    refused = pg_psql(fresh_db, "select * from pg_stat_statements", "--role", "app_admin")
    assert refused.returncode != 0
    assert "permission denied for view pg_stat_statements" in refused.stderr
    bloat = pg_psql(fresh_db, "select * from pgstattuple('orders')", "--role", "app_admin")
    assert bloat.returncode != 0
    assert "permission denied for function pgstattuple" in bloat.stderr
    path = pg_psql(fresh_db, "show search_path", "--role", "app_admin")
    assert path.returncode == 0, path.stderr
    assert '"$user",public,ops,core' in path.stdout


def test_app_dba_looks_names_up_in_core_and_reads_nothing_there(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute(
            "select has_schema_privilege('app_dba', 'core', 'usage'),"
            " bool_or(has_table_privilege('app_dba', c.oid, 'select, insert, update, delete'))"
            " from pg_class as c where c.relnamespace = 'core'::regnamespace and c.relkind in ('r', 'p', 'v')"
        ).fetchone()
    assert row == (True, False)
    denied = pg_psql(fresh_db, "select count(*) from orders", "--role", "app_dba")
    assert "permission denied for table orders" in denied.stderr
