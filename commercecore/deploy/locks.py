"""Deploying next to live traffic: a change that cannot get its lock in time gives up instead of queueing.

Every script runs with `lock_timeout` set in its session, so an `alter table` that needs an ACCESS
EXCLUSIVE lock waits at most that long behind a long transaction -- and, more to the point, the requests
that queue behind the waiting `alter table` wait at most that long too. While a statement of the script
runs, a second session looks at who blocks it (`pg_blocking_pids`): once the lock timeout has fired, the
wait is over and the blockers can no longer be asked for, so they are noted while the wait lasts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import psycopg

from commercecore.deploy.errors import DeployError, ScriptError
from gateway.durations import parse_duration

LOCK_NOT_AVAILABLE = "55P03"
WATCH_APPLICATION = "commercecore-deploy-watch"

TIMEOUT_ENV = "COMMERCECORE_DEPLOY_LOCK_TIMEOUT"
RETRIES_ENV = "COMMERCECORE_DEPLOY_LOCK_RETRIES"
RETRY_DELAY_ENV = "COMMERCECORE_DEPLOY_LOCK_RETRY_DELAY"
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0

_BLOCKERS_QUERY = """
select a.pid, coalesce(a.application_name, ''), a.query_start, a.state
from pg_catalog.pg_stat_activity as a
where a.pid = any (pg_catalog.pg_blocking_pids(%s))
order by a.pid
"""


@dataclass(frozen=True)
class Blocker:
    """A session holding (or queued ahead for) a lock a deploy script waited for."""

    pid: int
    application: str
    query_start: datetime | None
    state: str | None

    def describe(self) -> str:
        started = self.query_start.isoformat(sep=" ", timespec="seconds") if self.query_start else "unknown"
        return (
            f"pid {self.pid} (application {self.application or '(none)'}, state {self.state or 'unknown'}, "
            f"query started {started})"
        )


def _blocker(row: tuple[object, ...]) -> Blocker:
    pid, application, started, state = row
    return Blocker(
        pid=int(str(pid)),
        application=str(application),
        query_start=started if isinstance(started, datetime) else None,
        state=None if state is None else str(state),
    )


class LockTimeout(ScriptError):
    """A statement of a script gave up waiting for a lock (SQLSTATE 55P03).

    `retryable`: the failing statement was inside the script's own transaction and nothing of the script
    had been committed before it, so the server rolled everything back and running it again is safe.
    """

    def __init__(
        self,
        file: Path,
        reason: str,
        line: int | None,
        root: Path | None,
        *,
        blockers: tuple[Blocker, ...],
        retryable: bool,
    ) -> None:
        super().__init__(file, reason, line, LOCK_NOT_AVAILABLE, root)
        self.blockers = blockers
        self.retryable = retryable

    def blocked_by(self) -> str:
        if not self.blockers:
            return "the blocking session ended before it could be looked up"
        label = "session" if len(self.blockers) == 1 else "sessions"
        return f"blocked by {label} " + "; ".join(blocker.describe() for blocker in self.blockers)


def watch_interval(lock_timeout: float) -> float:
    """How often the blockers are looked up: a few times per lock wait, at most once a second."""
    return min(max(lock_timeout / 4, 0.05), 1.0)


class BlockerWatch:
    """Looks up, from a session of its own, who blocks session `pid`, every `interval` seconds while it
    is entered; `blockers` is the last non-empty answer. The first look-up (and the connection it needs)
    happens only once a script has run for one interval, so quick scripts cost nothing."""

    def __init__(self, conninfo: str, pid: int, interval: float) -> None:
        self.conninfo = conninfo
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seen: tuple[Blocker, ...] = ()
        self._thread = threading.Thread(target=self._watch, name=f"blockers-of-{pid}", daemon=True)

    @property
    def blockers(self) -> tuple[Blocker, ...]:
        with self._lock:
            return self._seen

    def __enter__(self) -> BlockerWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while not self._stop.wait(self.interval):
                if conn is None:
                    conn = psycopg.connect(
                        self.conninfo, autocommit=True, application_name=WATCH_APPLICATION, connect_timeout=10
                    )
                rows = conn.execute(_BLOCKERS_QUERY, [self.pid]).fetchall()
                if rows:
                    found = tuple(_blocker(row) for row in rows)
                    with self._lock:
                        self._seen = found
        except psycopg.Error:
            # the watch only names blockers in a message; the deploy itself never depends on it
            return
        finally:
            if conn is not None:
                conn.close()


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_duration(raw).total_seconds()
    except ValueError as exc:
        raise DeployError(f"{name}: {exc}") from None


def _env_count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise DeployError(f"{name}: {raw!r} is not a whole number of retries")
    return int(raw)


class DeployBlocked(DeployError):
    """A change gave up on a lock for good; the message names the sessions that blocked it."""

    def __init__(self, message: str, blockers: tuple[Blocker, ...]) -> None:
        super().__init__(message)
        self.blockers = blockers


@dataclass(frozen=True)
class LockPolicy:
    """How long a statement of a script waits for a lock, and how often a change that gave up is tried
    again: after `retry_delay` seconds, doubling with each attempt."""

    timeout: float  # seconds; 0 waits for ever, as PostgreSQL's lock_timeout = 0
    retries: int
    retry_delay: float

    def __post_init__(self) -> None:
        if self.timeout < 0 or self.retries < 0 or self.retry_delay < 0:
            raise DeployError(
                f"the lock timeout ({self.timeout:g} s), retries ({self.retries}) and retry delay "
                f"({self.retry_delay:g} s) may not be negative"
            )

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str],
        timeout: float | None = None,
        retries: int | None = None,
        retry_delay: float | None = None,
    ) -> LockPolicy:
        """The policy from the arguments given, else the environment, else the defaults."""
        return cls(
            timeout if timeout is not None else _env_seconds(env, TIMEOUT_ENV, DEFAULT_TIMEOUT),
            retries if retries is not None else _env_count(env, RETRIES_ENV, DEFAULT_RETRIES),
            retry_delay
            if retry_delay is not None
            else _env_seconds(env, RETRY_DELAY_ENV, DEFAULT_RETRY_DELAY),
        )

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number `attempt` (1, 2, ...)."""
        return float(self.retry_delay * 2 ** (attempt - 1))

    def give_up(self, exc: LockTimeout, attempts: int) -> DeployBlocked:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        unsafe = (
            " (its transaction was rolled back each time)"
            if exc.retryable
            else " (not tried again: the statement ran outside the script's own transaction or after "
            "a part of the script had committed, so running it again is not safe)"
        )
        return DeployBlocked(
            f"{exc}: gave up after {tries} of lock_timeout {self.timeout:g} s{unsafe}; {exc.blocked_by()}",
            exc.blockers,
        )
