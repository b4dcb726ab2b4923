"""`commercecore jobs run`: the periodic maintenance jobs, safe to run on several machines at once.

Jobs: expire unpaid orders (ops.expire_unpaid_orders: stale after a ttl without a live checkout, and
always at their maximum age from creation), refresh the daily sales report (ops.refresh_sales_daily,
concurrently), reconcile payments with Stripe (gateway.payments.reconcile, when Stripe is configured) and
purge expired sessions, idle login failures and old idempotency keys (ops.purge_batch, in batches).

Ticks are aligned on the wall clock (every `interval` seconds since the epoch), so runners on several
machines tick together. At each tick a runner releases the job locks it won at the previous tick, then
takes `pg_try_advisory_lock` per job; a runner that gets the lock runs the job and keeps the lock until its
next tick, so a runner whose clock is a little late finds it taken and skips: each job runs once per tick
across all runners. A runner that dies loses its locks with its session, and another takes over at the next
tick. Every event is one JSON log line on stderr.
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any

import psycopg

from commercecore.ops.target import OpsError, Target
from commercecore.text import one_line
from gateway.payments.config import PaymentSettings
from gateway.payments.reconcile import reconcile
from gateway.settings import SettingsError

log = logging.getLogger("commercecore.jobs")

# the first key of pg_try_advisory_lock(int, int): this application's namespace of advisory locks
LOCK_NAMESPACE = int.from_bytes(hashlib.sha256(b"commercecore.jobs").digest()[:4], "big", signed=True)

Conn = psycopg.Connection[tuple[Any, ...]]


class JobsError(OpsError):
    """The runner could not start; the message says why."""


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Conn], dict[str, Any]]

    @property
    def lock_key(self) -> int:
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "big", signed=True)


def expire_unpaid_orders(ttl: timedelta, max_age: timedelta | None = None) -> Job:
    """`max_age` None: the database's setting (commercecore.order_max_unpaid_age, else 60 minutes)."""

    def run(conn: Conn) -> dict[str, Any]:
        with conn.transaction():
            row = conn.execute(
                "select ops.expire_unpaid_orders(%s::interval, %s::interval)", [ttl, max_age]
            ).fetchone()
        result: dict[str, Any] = {"expired": int(row[0]) if row else 0, "ttl": str(ttl)}
        if max_age is not None:
            result["max_age_seconds"] = int(max_age.total_seconds())
        return result

    return Job("expire_unpaid_orders", run)


def refresh_sales_daily() -> Job:
    def run(conn: Conn) -> dict[str, Any]:
        with conn.transaction():
            conn.execute("select ops.refresh_sales_daily()")
        return {"refreshed": "ops.sales_daily"}

    return Job("refresh_sales_daily", run)


# the tables ops.purge_batch knows, in the order they are purged
PURGED_TABLES = ("auth.sessions", "auth.login_failures", "core.idempotency_keys")
DEFAULT_PURGE_BATCH = 1000


def purge_expired_rows(batch_size: int = DEFAULT_PURGE_BATCH) -> Job:
    """Each table purged one batch per transaction until a batch comes back short: no long transaction,
    no lock held on many rows, however much has piled up. The counts go to the log line and, through
    ops.purged_rows, to the gateway's /metrics."""

    def run(conn: Conn) -> dict[str, Any]:
        purged: dict[str, int] = {}
        for table in PURGED_TABLES:
            total = 0
            while True:
                with conn.transaction():
                    row = conn.execute("select ops.purge_batch(%s, %s)", [table, batch_size]).fetchone()
                count = int(row[0]) if row else 0
                total += count
                if count < batch_size:
                    break
            purged[table] = total
        return {"purged": purged, "batch_size": batch_size}

    return Job("purge_expired_rows", run)


class JobFailed(RuntimeError):
    """A job ran but did not finish its work; the message says what is left."""


def reconcile_payments(url: str, older_than: timedelta) -> Job:
    """gateway.payments.reconcile.reconcile(url, Stripe settings, older_than) when Stripe is configured;
    skipped with a log line otherwise."""

    def run(conn: Conn) -> dict[str, Any]:
        try:
            settings = PaymentSettings.from_env()
        except SettingsError as exc:
            return {"skipped": f"Stripe is not configured: {exc}"}
        report = reconcile(url, settings, older_than)
        summary: dict[str, Any] = report.as_dict()
        if summary.get("errors"):
            raise JobFailed(
                f"{len(summary['errors'])} payment(s) not reconciled: {'; '.join(summary['errors'][:3])}"
            )
        return summary

    return Job("reconcile_payments", run)


def default_jobs(
    url: str,
    ttl: timedelta,
    reconcile_after: timedelta = timedelta(minutes=15),
    purge_batch: int = DEFAULT_PURGE_BATCH,
    max_age: timedelta | None = None,
) -> list[Job]:
    return [
        expire_unpaid_orders(ttl, max_age),
        refresh_sales_daily(),
        reconcile_payments(url, reconcile_after),
        purge_expired_rows(purge_batch),
    ]


@dataclass
class Runner:
    """Runs the jobs once per tick; holds the advisory locks of the jobs it ran until its next tick."""

    url: str
    jobs: list[Job]
    interval: float = 60.0
    stop: threading.Event = field(default_factory=threading.Event)
    _conn: Conn | None = None
    _held: set[int] = field(default_factory=set)

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._held.clear()  # a new session holds no advisory lock
            self._conn = Target.from_url(self.url).connect(
                autocommit=True, application_name="commercecore-jobs"
            )
        return self._conn

    def tick(self) -> dict[str, str]:
        """One round: every job run here, or skipped because another runner holds it. name -> outcome."""
        outcomes: dict[str, str] = {}
        try:
            conn = self._connection()
            for key in sorted(self._held):
                conn.execute("select pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, key])
            self._held.clear()
        except (psycopg.Error, OpsError) as exc:
            # the runner outlives an outage: the next tick connects again
            self.close()
            log.error("database unavailable", extra={"event": "tick_failed", "error": one_line(exc)})
            return {job.name: "failed" for job in self.jobs}
        for job in self.jobs:
            if self.stop.is_set():
                break
            outcomes[job.name] = self._run(conn, job)
        return outcomes

    def _run(self, conn: Conn, job: Job) -> str:
        try:
            row = conn.execute(
                "select pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, job.lock_key]
            ).fetchone()
        except psycopg.Error as exc:
            log.error("lock failed", extra={"event": "job_failed", "job": job.name, "error": one_line(exc)})
            return "failed"
        if not row or not row[0]:
            log.info("skipped: another runner has it", extra={"event": "job_skipped", "job": job.name})
            return "skipped"
        self._held.add(job.lock_key)
        started = time.monotonic()
        try:
            result = job.run(conn)
        except Exception as exc:  # one failing job must not stop the others or the runner
            log.error(
                "job failed",
                extra={
                    "event": "job_failed",
                    "job": job.name,
                    "error": one_line(exc),
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
            if conn.broken:
                self._held.clear()
            return "failed"
        log.info(
            "job done",
            extra={
                "event": "job_done",
                "job": job.name,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                **result,
            },
        )
        return "done"

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                for key in sorted(self._held):
                    self._conn.execute("select pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, key])
            except psycopg.Error:
                pass  # the session's end releases them anyway
            self._conn.close()
        self._held.clear()
        self._conn = None

    def next_tick_in(self, now: float | None = None) -> float:
        """Seconds until the next multiple of `interval` on the wall clock."""
        current = time.time() if now is None else now
        return max(0.0, math.floor(current / self.interval + 1) * self.interval - current)

    def run_forever(self) -> None:
        log.info("jobs runner started", extra={"event": "started", "interval": self.interval,
                                               "jobs": [job.name for job in self.jobs]})  # fmt: skip
        try:
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self.next_tick_in())
        finally:
            self.close()
            log.info("jobs runner stopped", extra={"event": "stopped"})


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`: the current job finishes, locks are released, the runner exits 0."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "signal received, stopping", extra={"event": "signal", "signal": signal.Signals(signum).name}
        )
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
