"""Housekeeping: ops.purge_batch deletes expired sessions, idle login failures and idempotency keys past
24 hours, one bounded batch at a time, counts them in ops.purged_rows (read by /metrics through
auth.purge_totals), and `commercecore jobs run` purges every table until a batch comes back short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from commercecore.ops import jobs
from tests.conftest import Session

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("auth.sessions", "auth.login_failures", "core.idempotency_keys")
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def _user(conn: psycopg.Connection[Any], email: str) -> int:
    row = conn.execute("insert into core.users (email) values (%s) returning id", [email]).fetchone()
    assert row is not None
    return int(row[0])


def _session(conn: psycopg.Connection[Any], user_id: int, *, expired: bool, revoked: bool = False) -> None:
    conn.execute(
        "insert into auth.sessions (jti, user_id, role, issued_at, expires_at, revoked_at)"
        " values (%s, %s, 'app_readwrite', now() - interval '2 days',"
        " now() + case when %s then interval '-1 hour' else interval '1 hour' end,"
        " case when %s then now() end)",
        [uuid.uuid4(), user_id, expired, revoked],
    )


def _failure(conn: psycopg.Connection[Any], email: str, *, idle: str, retry_in: str | None = None) -> None:
    conn.execute(
        "insert into auth.login_failures (email_hash, client, failed_attempts, last_failed_at, retry_at)"
        " values (sha256(convert_to(%s, 'UTF8')), '192.0.2.7', 4, now() - %s::interval,"
        " now() + %s::interval)",
        [email, idle, retry_in],
    )


def _key(conn: psycopg.Connection[Any], user_id: int, age: str) -> None:
    conn.execute(
        "insert into core.idempotency_keys (user_id, key, endpoint, request_hash, status_code, response,"
        " created_at) values (%s, %s, 'POST /orders', repeat('0', 64), 201, '{}', now() - %s::interval)",
        [user_id, uuid.uuid4().hex, age],
    )


def arrange(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows to purge and rows to keep in each table; the number of each table's rows to purge."""
    user = _user(conn, f"hk-{uuid.uuid4().hex[:8]}@example.com")
    for _ in range(5):
        _session(conn, user, expired=True)
    _session(conn, user, expired=False)
    _session(conn, user, expired=False, revoked=True)  # revoked, not expired: kept for the record
    for n in range(3):
        _failure(conn, f"old-{n}@example.com", idle="25 hours")
    _failure(conn, "recent@example.com", idle="1 hour", retry_in="5 minutes")
    # idle for long but its delay still runs (a delay_max over a day): kept until the delay is over
    _failure(conn, "running@example.com", idle="25 hours", retry_in="1 hour")
    for _ in range(4):
        _key(conn, user, "25 hours")
    _key(conn, user, "23 hours")
    return {"auth.sessions": 5, "auth.login_failures": 3, "core.idempotency_keys": 4}


def purge_all(db: Session, batch_size: int) -> dict[str, list[int]]:
    batches: dict[str, list[int]] = {}
    for table in TABLES:
        sizes = batches.setdefault(table, [])
        while True:
            sizes.append(db.one("select ops.purge_batch(%s, %s)", [table, batch_size]))
            if sizes[-1] < batch_size:
                break
    return batches


def totals(db: Session) -> dict[str, int]:
    return {name: int(rows) for name, rows in db.all("select * from auth.purge_totals()")}


def test_purge_batch_deletes_only_what_served_its_time_in_bounded_batches(db: Session) -> None:
    db.as_superuser()
    purge_all(db, 1000)  # whatever other tests left behind
    before = totals(db)
    expected = arrange(db.conn)
    db.conn.execute("set local role app_dba")
    batches = purge_all(db, 2)
    assert batches == {
        "auth.sessions": [2, 2, 1],
        "auth.login_failures": [2, 1],
        "core.idempotency_keys": [2, 2, 0],
    }
    db.as_superuser()
    assert {table: totals(db)[table] - before[table] for table in TABLES} == expected
    assert db.all("select count(*), count(revoked_at) from auth.sessions where expires_at > now()") == [
        (2, 1)
    ]
    assert db.one("select count(*) from auth.sessions where expires_at <= now()") == 0
    assert sorted(
        email
        for (email,) in db.all(
            "select e from auth.login_failures as f, unnest(array['recent@example.com',"
            " 'running@example.com', 'old-0@example.com']) as e"
            " where f.email_hash = sha256(convert_to(e, 'UTF8'))"
        )
    ) == ["recent@example.com", "running@example.com"]
    assert (
        db.one("select count(*) from core.idempotency_keys where created_at < now() - interval '24 hours'")
        == 0
    )
    assert db.one("select count(*) from core.idempotency_keys") == 1
    assert db.one("select count(*) from ops.purged_rows where last_purged_at = now()") == 3


def test_purge_batch_refuses_other_tables_and_silly_batches(db: Session) -> None:
    db.conn.execute("set local role app_dba")
    with db.raises("22023"):
        db.one("select ops.purge_batch('core.orders', 10)")
    for size in (0, -1, 100001, None):
        with db.raises("22023"):
            db.one("select ops.purge_batch('auth.sessions', %s)", [size])
    db.as_role("app_admin", db.claims(1, "app_admin"))
    with db.raises("42501"):
        db.one("select ops.purge_batch('auth.sessions', 10)")


@pytest.fixture
def arranged(fresh_db: str) -> tuple[str, dict[str, int]]:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        return fresh_db, arrange(conn)


def test_the_jobs_runner_purges_every_table_until_a_batch_comes_back_short(
    arranged: tuple[str, dict[str, int]],
) -> None:
    url, expected = arranged
    runner = jobs.Runner(url, [jobs.purge_expired_rows(batch_size=2)])
    try:
        assert runner.tick() == {"purge_expired_rows": "done"}
    finally:
        runner.close()
    with psycopg.connect(url) as conn:
        purged = dict(conn.execute("select table_name, purged_rows from ops.purged_rows").fetchall())
        left = conn.execute("select count(*) from auth.sessions where expires_at <= now()").fetchone()
    assert purged == expected
    assert left == (0,)


def test_jobs_run_once_prints_the_purge_counts(arranged: tuple[str, dict[str, int]]) -> None:
    url, expected = arranged
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_") and k != "COMMERCECORE_DEMO"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "commercecore.cli",
            "jobs",
            "run",
            "--once",
            "--purge-batch",
            "3",
            "--database-url",
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    done = {event["job"]: event for event in events if event.get("event") == "job_done"}
    assert done["purge_expired_rows"]["purged"] == expected
    assert done["purge_expired_rows"]["batch_size"] == 3
