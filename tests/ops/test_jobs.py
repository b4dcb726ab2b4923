"""`commercecore jobs run`: stale unpaid orders expire, each job runs once per tick however many runners
there are, JSON log lines, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from commercecore.local import seed
from commercecore.ops import jobs
from tests.ops.helpers import cli, create_order, demo_customer, error_line, in_stock

ROOT = Path(__file__).resolve().parents[2]
STRIPE_VARS = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "COMMERCECORE_DEMO")


def _stale_order(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        order = create_order(conn, demo_customer(conn), [(in_stock(conn, 1)[0], 1)])
        conn.execute("update core.orders set created_at = now() - interval '2 hours' where id = %s", [order])
    return order


def _status(url: str, order: int) -> tuple[Any, ...]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select status, cancel_reason from core.orders where id = %s", [order]).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def shop(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in STRIPE_VARS:
        monkeypatch.delenv(name, raising=False)
    seed.seed_demo(fresh_db)
    return fresh_db


def test_each_job_runs_once_per_tick_across_runners(shop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMERCECORE_DEMO", "1")  # reconcile talks to the local stand-in (nothing is stale)
    stale = _stale_order(shop)
    fresh = _stale_order(shop)
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("update core.orders set created_at = now() where id = %s", [fresh])
    first = jobs.Runner(shop, jobs.default_jobs(shop, jobs.timedelta(minutes=30)), interval=60)
    second = jobs.Runner(shop, jobs.default_jobs(shop, jobs.timedelta(minutes=30)), interval=60)
    names = ["expire_unpaid_orders", "refresh_sales_daily", "reconcile_payments", "purge_expired_rows"]
    try:
        assert first.tick() == dict.fromkeys(names, "done")
        assert _status(shop, stale) == ("cancelled", "expired")
        assert _status(shop, fresh) == ("pending", None)
        # the same tick on another machine: every job is already taken
        assert second.tick() == dict.fromkeys(names, "skipped")
        # next tick: the first runner lets go and takes them again before the late one comes
        assert first.tick() == dict.fromkeys(names, "done")
        assert second.tick() == dict.fromkeys(names, "skipped")
        # a runner that goes away releases its jobs; the other takes over at its next tick
        first.close()
        assert second.tick() == dict.fromkeys(names, "done")
    finally:
        first.close()
        second.close()


def test_a_failing_job_does_not_stop_the_others(shop: str) -> None:
    def broken(conn: jobs.Conn) -> dict[str, Any]:
        conn.execute("select 1/0")
        return {}

    stale = _stale_order(shop)
    runner = jobs.Runner(
        shop, [jobs.Job("broken", broken), jobs.expire_unpaid_orders(jobs.timedelta(minutes=30))]
    )
    try:
        assert runner.tick() == {"broken": "failed", "expire_unpaid_orders": "done"}
    finally:
        runner.close()
    assert _status(shop, stale) == ("cancelled", "expired")


def test_a_runner_survives_an_unreachable_database() -> None:
    runner = jobs.Runner(
        "postgresql://nobody@127.0.0.1:1/none",
        jobs.default_jobs("postgresql://x/y", jobs.timedelta(minutes=30)),
    )
    assert set(runner.tick().values()) == {"failed"}
    runner.close()


def test_reconcile_is_skipped_without_stripe_settings(shop: str) -> None:
    runner = jobs.Runner(shop, [jobs.reconcile_payments(shop, jobs.timedelta(minutes=15))])
    try:
        assert runner.tick() == {"reconcile_payments": "done"}
    finally:
        runner.close()


def test_bad_ttl_is_one_line(shop: str) -> None:
    result = cli("jobs", "run", "--once", "--ttl", "soon", "--db-url", shop)
    assert result.exit_code == 1
    assert "--ttl 'soon' is not a duration" in error_line(result)
    result = cli("jobs", "run", "--once", "--ttl", "-5 minutes", "--db-url", shop)
    assert result.exit_code == 1
    assert "must be positive" in error_line(result)


def _command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "commercecore.cli", "jobs", "run", "--db-url", url, *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in STRIPE_VARS and k != "DATABASE_URL"}


def test_jobs_run_once_logs_json_lines(shop: str) -> None:
    stale = _stale_order(shop)
    proc = subprocess.run(
        _command(shop, "--once", "--ttl", "30min"),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    done = {event["job"]: event for event in events if event.get("event") == "job_done"}
    assert done["expire_unpaid_orders"]["expired"] == 1
    assert "skipped" in done["reconcile_payments"]  # no Stripe settings here
    assert set(done) == {
        "expire_unpaid_orders",
        "refresh_sales_daily",
        "reconcile_payments",
        "purge_expired_rows",
    }
    assert all({"ts", "level", "logger"} <= set(event) for event in events)
    assert _status(shop, stale) == ("cancelled", "expired")


def test_jobs_run_stops_cleanly_on_sigterm(shop: str) -> None:
    with subprocess.Popen(
        _command(shop, "--interval", "3600"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stderr is not None
            seen: list[dict[str, Any]] = []
            # the first tick runs at once; wait (on the log, not the clock) until all four jobs are through
            while len([e for e in seen if e.get("event") in ("job_done", "job_skipped", "job_failed")]) < 4:
                line = proc.stderr.readline()
                assert line, f"runner exited early: {seen}"
                seen.append(json.loads(line))
            proc.send_signal(signal.SIGTERM)
            rest = proc.stderr.read()
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    events = seen + [json.loads(line) for line in rest.splitlines() if line.strip()]
    kinds = [event.get("event") for event in events]
    assert kinds[0] == "started"
    assert "signal" in kinds
    assert kinds[-1] == "stopped"
    # its advisory locks went with it: another runner gets every job at once
    runner = jobs.Runner(shop, jobs.default_jobs(shop, jobs.timedelta(minutes=30)))
    try:
        assert set(runner.tick().values()) == {"done"}
    finally:
        runner.close()
