"""`commercecore dba ...` and `audit tail` against planted problems: an unused index and a duplicate pair, a
table bloated by mass updates with autovacuum off, a session blocked by a lock held in an open transaction."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from commercecore.local import seed
from tests.conftest import login_url
from tests.ops.helpers import cli, wait_until


def _json(*args: str, code: int = 0) -> Any:
    result = cli(*args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_unused_and_duplicate_indexes_are_reported(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("create table public.planted_idx (id int primary key, a int, b int, c text)")
        conn.execute(
            "insert into public.planted_idx select g, g % 100, g % 7, g::text from generate_series(1, 2000) g"
        )
        conn.execute("create index planted_used_idx on public.planted_idx (a)")
        conn.execute("create index planted_unused_idx on public.planted_idx (lower(c))")
        conn.execute("create index planted_dup_a on public.planted_idx (b, a) where b > 0")
        conn.execute("create index planted_dup_b on public.planted_idx (b, a) where b > 0")
        # same columns, other predicate: not a duplicate
        conn.execute("create index planted_not_dup on public.planted_idx (b, a) where b > 1")
        conn.execute("analyze public.planted_idx")
        # the used index: scanned, and the statistics flushed before the report reads them
        conn.execute("set enable_seqscan = off")
        plan = conn.execute("explain select count(*) from public.planted_idx where a = 5").fetchall()
        assert "planted_used_idx" in str(plan)
        conn.execute("select count(*) from public.planted_idx where a = 5").fetchone()
        conn.execute("select pg_stat_force_next_flush()")
        conn.execute("select 1")
    report = _json("dba", "indexes", "--json", "--database-url", fresh_db)
    unused = {row["index_name"] for row in report["unused"]}
    assert "planted_unused_idx" in unused
    assert "planted_used_idx" not in unused  # it was scanned
    assert "planted_idx_pkey" not in unused  # enforces uniqueness
    groups = [set(group["indexes"]) for group in report["duplicates"]]
    assert {"planted_dup_a", "planted_dup_b"} in groups
    assert not any("planted_not_dup" in group for group in groups)
    group = next(g for g in report["duplicates"] if "planted_dup_a" in g["indexes"])
    assert group["keep"] == "planted_dup_a"
    assert group["redundant"] == ["planted_dup_b"]

    health = _json("dba", "health", "--json", "--database-url", fresh_db, code=1)
    check = next(c for c in health["checks"] if c["name"] == "indexes")
    assert check["status"] == "warn"
    assert "planted_dup_b" in check["detail"]


def test_bloat_after_mass_updates_is_reported(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "create table public.planted_bloat (id int primary key, payload text)"
            " with (autovacuum_enabled = false)"
        )
        conn.execute(
            "insert into public.planted_bloat"
            " select g, repeat(md5(g::text), 4) from generate_series(1, 12000) g"
        )
        for _ in range(2):
            conn.execute("update public.planted_bloat set payload = payload || 'x'")
        conn.execute("create table public.planted_tight (id int primary key, payload text)")
        conn.execute(
            "insert into public.planted_tight"
            " select g, repeat(md5(g::text), 4) from generate_series(1, 12000) g"
        )
    rows = _json("dba", "bloat", "--json", "--limit", "5", "--database-url", fresh_db)
    by_name = {row["table_name"]: row for row in rows}
    bloated = by_name["public.planted_bloat"]
    assert bloated["bloated"] is True
    assert bloated["dead_percent"] + bloated["free_percent"] >= 60  # two of every three row versions are dead
    assert bloated["autovacuum_disabled"] is True
    assert by_name["public.planted_tight"]["bloated"] is False

    health = _json(
        "dba", "health", "--json", "--db-url", fresh_db, "--threshold", "bloat_min_bytes=1000000", code=1
    )
    check = next(c for c in health["checks"] if c["name"] == "bloat")
    assert check["status"] == "warn"
    assert "public.planted_bloat" in check["detail"]
    assert "planted_tight" not in check["detail"]


def test_blocked_session_is_reported_with_its_blocker(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("create table public.lock_target (id int primary key, v int)")
        conn.execute("insert into public.lock_target values (1, 0)")
    holder_conn = psycopg.connect(fresh_db)
    waiter_conn = psycopg.connect(fresh_db, autocommit=True)
    holder_pid, waiter_pid = holder_conn.info.backend_pid, waiter_conn.info.backend_pid
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            holder_conn.execute("update public.lock_target set v = 1 where id = 1")
            held.set()
            release.wait(60)
            holder_conn.commit()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
            held.set()

    def wait_for_lock() -> None:
        try:
            waiter_conn.execute("update public.lock_target set v = 2 where id = 1")
        except BaseException as exc:
            errors.append(exc)

    holder = threading.Thread(target=hold)
    waiter = threading.Thread(target=wait_for_lock)
    holder.start()
    try:
        assert held.wait(20)
        waiter.start()
        with psycopg.connect(fresh_db, autocommit=True) as probe:

            def blocked() -> bool:
                row = probe.execute("select pg_blocking_pids(%s)", [waiter_pid]).fetchone()
                return row is not None and holder_pid in row[0]

            wait_until(blocked, what="the waiter to queue behind the holder")

        locks = _json("dba", "locks", "--json", "--idle", "0", "--database-url", fresh_db)
        chain = [row for row in locks["blocking"] if row["blocked_pid"] == waiter_pid]
        assert len(chain) == 1
        assert chain[0]["blocking_pid"] == holder_pid
        assert chain[0]["blocking_is_root"] is True
        assert chain[0]["blocking_state"] == "idle in transaction"
        assert "set v = 2" in chain[0]["blocked_query"]
        assert chain[0]["wait_seconds"] >= 0
        idle = [row for row in locks["sessions"] if row["pid"] == holder_pid]
        assert [row["kind"] for row in idle] == ["idle_in_transaction"]

        result = cli(
            "dba", "health", "--json", "--threshold", "blocked_wait_warn=0", "--database-url", fresh_db
        )
        health = json.loads(result.stdout)
        check = next(c for c in health["checks"] if c["name"] == "blocking")
        assert check["status"] == "warn"
        assert str(holder_pid) in check["detail"]
        assert health["verdict"] in ("warn", "critical")
        assert result.exit_code == {"warn": 1, "critical": 2}[health["verdict"]]

        table = cli("dba", "locks", "--database-url", fresh_db)
        assert table.exit_code == 0
        assert str(waiter_pid) in table.stdout
    finally:
        release.set()
        holder.join(30)
        waiter.join(30)
        holder_conn.close()
        waiter_conn.close()
    assert errors == []
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert conn.execute("select v from public.lock_target").fetchone() == (2,)
    # nothing waits any more
    locks = _json("dba", "locks", "--json", "--database-url", fresh_db)
    assert not [row for row in locks["blocking"] if row["blocked_pid"] == waiter_pid]


def test_top_queries_and_health_on_a_quiet_database(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for price in (100, 200, 300):
            conn.execute("select count(*) from core.products where price_minor > %s", [price]).fetchone()
    top = _json("dba", "top", "--json", "--limit", "50", "--database-url", fresh_db)
    texts = [row for row in top["queries"] if "core.products where price_minor >" in row["query"]]
    assert texts
    assert texts[0]["calls"] >= 3
    assert {"total_exec_ms", "mean_exec_ms", "rows", "cache_hit_ratio"} <= set(texts[0])
    assert top["cache"]["database_name"] == fresh_db.rsplit("/", 1)[1]

    result = cli("dba", "health", "--json", "--database-url", fresh_db)
    health = json.loads(result.stdout)
    statuses = {check["name"]: check["status"] for check in health["checks"]}
    assert statuses["blocking"] == "ok"
    assert statuses["indexes"] == "ok"
    assert statuses["wal_archiving"] == "ok"
    assert isinstance(health["io"], list)
    assert health["io"]
    assert result.exit_code == {"ok": 0, "warn": 1, "critical": 2}[health["verdict"]]


def test_health_of_an_unreachable_server_is_critical() -> None:
    result = cli("dba", "health", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 2
    assert "cannot connect" in result.stderr


@pytest.fixture
def audited(fresh_db: str) -> str:
    seed.seed_demo(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn, conn.transaction():
        conn.execute("select set_config('request.id', 'req-ops-audit', true)")
        conn.execute("update core.products set price_minor = price_minor + 5 where sku = 'COF-0001001'")
    return fresh_db


def test_audit_tail_filters_newest_first(audited: str) -> None:
    rows = _json("audit", "tail", "--json", "--request-id", "req-ops-audit", "--database-url", audited)
    assert len(rows) == 1
    assert rows[0]["table_name"] == "core.products"
    assert rows[0]["operation"] == "UPDATE"
    assert "price_minor" in rows[0]["changed"]
    assert rows[0]["new_row"]["price_minor"] == rows[0]["old_row"]["price_minor"] + 5

    latest = _json("audit", "tail", "--json", "--limit", "5", "--database-url", audited)
    assert [row["id"] for row in latest] == sorted((row["id"] for row in latest), reverse=True)
    assert latest[0]["request_id"] == "req-ops-audit"

    users = _json("audit", "tail", "--json", "--table", "users", "--database-url", audited)
    assert {row["table_name"] for row in users} == {"core.users"}
    assert len(users) == 2
    by_role = _json("audit", "tail", "--json", "--actor", "nobody_role", "--database-url", audited)
    assert by_role == []

    table = cli("audit", "tail", "--table", "core.products", "--limit", "3", "--database-url", audited)
    assert table.exit_code == 0
    assert "UPDATE" in table.stdout


@pytest.fixture
def dba_login(audited: str) -> Iterator[str]:
    """A DBA's own login, a member of app_dba (roles are cluster-wide: dropped afterwards); its URL."""
    name = f"cc_dba_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    database = sql.Identifier(str(conninfo_to_dict(audited)["dbname"]))
    with psycopg.connect(audited, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {} in role app_dba").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("grant connect on database {} to {}").format(database, sql.Identifier(name)))
    try:
        yield login_url(audited, name, password)
    finally:
        with psycopg.connect(audited, autocommit=True) as conn:
            conn.execute(
                sql.SQL("revoke connect on database {} from {}").format(database, sql.Identifier(name))
            )
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_audit_tail_shows_app_dba_masked_emails(audited: str, dba_login: str) -> None:
    """The same entries: in full for the owner's login, with emails masked for a DBA's."""
    full = _json("audit", "tail", "--json", "--table", "users", "--database-url", audited)
    masked = _json("audit", "tail", "--json", "--table", "users", "--database-url", dba_login)
    assert [row["id"] for row in masked] == [row["id"] for row in full]
    emails = {row["new_row"]["email"] for row in full}
    assert {email for email, *_rest in seed.DEMO_USERS} <= emails
    shown = {row["new_row"]["email"] for row in masked}
    assert shown == {email[0] + "***@" + email.split("@")[1] for email in emails}
    assert not emails & shown
    table = cli("audit", "tail", "--table", "users", "--database-url", dba_login)
    assert table.exit_code == 0, table.output
    assert not any(email in table.stdout for email in emails)
