"""Streaming read replicas: which requests may read from one, which one, and what each worker knows of them.

Routing: a GET or HEAD of a view, or of a STABLE or IMMUTABLE function (`Plan.replica_safe`), by an
anonymous visitor or a customer may run on a replica; anything else, and every request of staff, runs on
the primary. Among the replicas the monitor last found healthy (in recovery, answering, at most
COMMERCECORE_REPLICA_MAX_LAG behind the primary) the least busy one takes the read; none: the primary.

Read-your-writes: a write's response carries the WAL position of its commit (`X-Commercecore-LSN`, and for
a cookie session the `cc_lsn` cookie); a read that sends it back runs on a replica only once that replica
has replayed up to it. It waits at most COMMERCECORE_REPLICA_WAIT for one to get there (the monitor then
checks every few milliseconds and wakes the waiters), and otherwise reads from the primary. A replica
whose replay is paused is not waited for.

Failures: a read a replica cannot answer (a lost connection, a server shutting down, a recovery conflict,
an object or a session the primary has and the replica has not replayed yet) runs once more on the
primary: never a second time on a replica, and never a write. A lost connection also marks the replica
down until the monitor finds it answering again; it then gets a fresh pool (the old one would wait out its
reconnection backoff first).

Each worker runs its own monitor (`Replicas.watch`): every COMMERCECORE_REPLICA_CHECK_INTERVAL it reads the
primary's WAL position and each replica's replay position, replay pause and last replayed commit time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool
from starlette.requests import cookie_parser
from starlette.responses import Response

from gateway import db, guard
from gateway.anonymous import AnonymousShare
from gateway.auth.csrf import Cookies
from gateway.errors import ApiError
from gateway.plan import Plan
from gateway.settings import Settings

log = logging.getLogger("commercecore.gateway")

LSN_HEADER = "X-Commercecore-LSN"
_LSN_HEADER_KEY = LSN_HEADER.lower()
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
MAX_LSN_LENGTH = 17  # "FFFFFFFF/FFFFFFFF"
PRIMARY = "primary"
# the request roles whose reads may come from a replica: staff always read what they just changed
REPLICA_ROLES = frozenset({"app_readonly", "app_readwrite"})
# a check of one server that takes longer marks it down (libpq's connect_timeout counts whole seconds)
CHECK_TIMEOUT = 2.0
# SQLSTATEs of a read a replica could not answer where the primary can: lost or refused connections (08,
# 53, 57P0x), recovery conflicts (40001, 40P01), what only a standby refuses (25006, 55000), and objects or
# privileges the primary's schema cache has and the replica has not replayed yet (42)
_REPLICA_FAULTS = frozenset({"40001", "40P01", "25006", "55000", "57P01", "57P02", "57P03", "57P04"})
_REPLICA_FAULT_CLASSES = ("08", "42", "53")
STATE_QUERY = """
select pg_catalog.pg_is_in_recovery(),
  pg_catalog.pg_last_wal_replay_lsn()::text,
  case when pg_catalog.pg_is_in_recovery() then pg_catalog.pg_is_wal_replay_paused() else false end,
  extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.pg_last_xact_replay_timestamp())::float8
"""
PRIMARY_QUERY = "select pg_catalog.pg_current_wal_lsn()::text"


def parse_lsn(text: str) -> int:
    """`16/B374D848` -> its 64-bit position; ValueError for anything else."""
    if len(text) > MAX_LSN_LENGTH or not _LSN.fullmatch(text):
        raise ValueError(f"{text[:40]!r} is not a WAL position")
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def client_lsn(headers: Mapping[str, str], cookies: Cookies) -> int | None:
    """The commit position a request carries (the header, else the cookie), or None; 400 for anything that
    is not one (a bad cookie is cleared by the answer, so the next request goes through)."""
    sent = headers.get(_LSN_HEADER_KEY)
    source = LSN_HEADER
    if sent is None:
        raw = headers.get("cookie", "")
        source = cookies.lsn
        sent = cookie_parser(raw).get(source) if source in raw else None
    if sent is None:
        return None
    try:
        return parse_lsn(sent.strip())
    except ValueError:
        raise ApiError(
            400,
            "PGRST100",
            f"{source} is not a WAL position.",
            details={"code": "invalid_lsn", "field": source, "max_length": MAX_LSN_LENGTH},
            hint=f"Send back the {LSN_HEADER} value of a write's response unchanged (e.g. 0/16B3748).",
            headers={"Set-Cookie": cookies.commit_position("", 0)} if source != LSN_HEADER else None,
        ) from None


def stamp_commit(response: Response, lsn: str, *, cookie: Cookies | None, max_lag: float) -> None:
    """A write's response: its commit position in the header, and in the cookie for a cookie session,
    living twice the lag bound (by then any replica in use has replayed it)."""
    response.headers[LSN_HEADER] = lsn
    if cookie is not None:
        response.headers.append("set-cookie", cookie.commit_position(lsn, max(1, math.ceil(2 * max_lag))))


def replica_fault(exc: db.StatementError) -> bool:
    """Whether a replica's error is one the primary may not have (see _REPLICA_FAULTS)."""
    sqlstate = exc.error.sqlstate or ""
    return sqlstate in _REPLICA_FAULTS or sqlstate.startswith(_REPLICA_FAULT_CLASSES)


def label_of(url: str) -> str:
    """`host:port/database` of a URL: what logs and metrics name a replica by (never its password)."""
    parts = conninfo_to_dict(url)
    host = str(parts.get("host") or parts.get("hostaddr") or "localhost")
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


@dataclass(eq=False)
class Replica:
    """One replica as this worker last saw it."""

    label: str
    url: str = field(repr=False)
    share: AnonymousShare = field(repr=False)
    pool: AsyncConnectionPool[Any] | None = field(default=None, repr=False)
    # answering (its monitor connection works) and in recovery; `healthy`: also within the lag bound
    reachable: bool = False
    healthy: bool = False
    paused: bool = False
    replay_lsn: int = 0
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    # what the log last said of it: in use, lagging, down
    status: str = "unknown"
    in_use: int = 0
    monitor: psycopg.AsyncConnection[Any] | None = field(default=None, repr=False)


class ReplicaMetrics:
    """The routing counts and what the monitor sees of each replica, on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.routed = Counter(
            "commercecore_db_routed",
            "API requests by the server that ran them (primary, or a replica's host:port/database) and why.",
            ["target", "reason"],
            registry=registry,
        )
        self.up = Gauge(
            "commercecore_replica_up",
            "1 when the replica answers, replays and is within COMMERCECORE_REPLICA_MAX_LAG, else 0.",
            ["replica"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.lag_bytes = Gauge(
            "commercecore_replica_lag_bytes",
            "WAL bytes the replica has not replayed yet (the primary's position at the last check).",
            ["replica"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.lag_seconds = Gauge(
            "commercecore_replica_lag_seconds",
            "Age of the newest commit the replica replayed, while it is behind the primary (0 caught up).",
            ["replica"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, target: str, reason: str) -> None:
        child = self._children.get((target, reason))
        if child is None:
            child = self._children[(target, reason)] = self.routed.labels(target, reason)
        child.inc()

    def show(self, replica: Replica) -> None:
        self.up.labels(replica.label).set(1 if replica.healthy else 0)
        self.lag_bytes.labels(replica.label).set(replica.lag_bytes if replica.lag_bytes is not None else -1)
        self.lag_seconds.labels(replica.label).set(
            replica.lag_seconds if replica.lag_seconds is not None else -1
        )


class Replicas:
    """The replicas of one worker: their pools, the monitor's view of them, and the routing of reads."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.config = settings.replicas
        self.metrics = ReplicaMetrics(registry)
        self.replicas = [
            Replica(label_of(url), url, AnonymousShare(settings.anonymous, self.config.pool_max))
            for url in self.config.urls
        ]
        # the monitor's own connection to the primary: the pool may be busy with requests just when a lag
        # matters most
        self._primary: psycopg.AsyncConnection[Any] | None = None
        self._primary_known = True  # whether the last check read it (a failure is logged once)
        self.primary_lsn: int | None = None
        # (when, the primary's position) of the recent checks, spanning more than the lag bound
        kept = math.ceil(self.config.max_lag / self.config.check_interval) + 2
        self._positions: collections.deque[tuple[float, int]] = collections.deque(maxlen=min(kept, 100_000))
        self._changed = asyncio.Condition()
        self._hurry = asyncio.Event()
        self._waiting = 0
        self._retiring: set[asyncio.Task[None]] = set()

    # -- routing -------------------------------------------------------------------------------------------

    @staticmethod
    def primary_reason(identity: db.Identity | None, plan: Plan) -> str | None:
        """Why a request must run on the primary, or None when a replica may serve it."""
        if not plan.replica_safe:
            return "write"
        if identity is None or identity.role not in REPLICA_ROLES:
            return "staff"
        return None

    def _candidates(self) -> list[Replica]:
        return [r for r in self.replicas if r.healthy and r.pool is not None]

    def _pick(self, lsn: int | None) -> Replica | None:
        ready = [r for r in self._candidates() if lsn is None or r.replay_lsn >= lsn]
        return min(ready, key=lambda r: r.in_use) if ready else None

    async def choose(self, lsn: int | None) -> tuple[Replica | None, str]:
        """The replica a read runs on and why, or None and why the primary reads instead."""
        found = self._pick(lsn)
        if found is not None:
            return found, "read" if lsn is None else "caught_up"
        candidates = self._candidates()
        if not candidates:
            return None, "lagging" if any(r.reachable for r in self.replicas) else "down"
        assert lsn is not None  # a healthy candidate serves any read without a position
        if self.config.wait <= 0 or all(r.paused for r in candidates):
            return None, "behind"
        found = await self._wait_for(lsn)
        return (found, "caught_up") if found is not None else (None, "behind")

    async def _wait_for(self, lsn: int) -> Replica | None:
        """A replica once one has replayed up to `lsn`, within COMMERCECORE_REPLICA_WAIT; else None."""
        self._waiting += 1
        self._hurry.set()
        try:
            async with asyncio.timeout(self.config.wait), self._changed:
                await self._changed.wait_for(lambda: self._pick(lsn) is not None)
        except TimeoutError:
            return None
        finally:
            self._waiting -= 1
        return self._pick(lsn)

    @contextlib.contextmanager
    def using(self, replica: Replica) -> Iterator[AsyncConnectionPool[Any]]:
        pool = replica.pool
        if pool is None:  # went down between the choice and now
            raise psycopg.OperationalError(f"replica {replica.label} has no pool")
        replica.in_use += 1
        try:
            yield pool
        finally:
            replica.in_use -= 1

    def failed(self, replica: Replica, exc: BaseException) -> None:
        """A read lost its connection to the replica: no more reads go there until the monitor finds it
        answering again."""
        _tell(replica, "down", logging.WARNING, f"failed a read, skipped until it answers: {_why(exc)}")
        replica.reachable = replica.healthy = False
        self.metrics.show(replica)

    def count(self, target: str, reason: str) -> None:
        self.metrics.count(target, reason)

    # -- the monitor ---------------------------------------------------------------------------------------

    async def check_logins(self) -> None:
        """Raises guard.UnsafeLogin for a superuser or BYPASSRLS login on a replica, as for the primary (a
        replica that is down passes: its pool checks each connection it makes)."""
        for replica in self.replicas:
            await guard.check_url_async(replica.url, self.settings.pool_timeout)

    async def open(self) -> None:
        """Checks each replica once, so that reads may go to them from the first request."""
        await self.check()

    async def watch(self) -> None:
        """The monitor: a check every COMMERCECORE_REPLICA_CHECK_INTERVAL, every few milliseconds while a
        read waits for a replica to reach its position (only the replicas' positions then)."""
        while True:
            hurried = self._waiting > 0
            interval = max(self.config.wait / 10, 0.005) if hurried else self.config.check_interval
            self._hurry.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._hurry.wait()
            try:
                await self.check(primary=self._waiting == 0)
            except Exception:
                log.exception("replica monitor: check failed")

    async def check(self, *, primary: bool = True) -> None:
        """Reads the primary's WAL position (unless told not to) and each replica's state; wakes the reads
        waiting for a position."""
        if primary:
            position = await self._primary_position()
            if position is not None:
                self._positions.append((time.monotonic(), position))
            # unknown for a moment (the primary restarting): the last known position still bounds the lag
            self.primary_lsn = position or self.primary_lsn
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))
        async with self._changed:
            self._changed.notify_all()

    async def _primary_position(self) -> int | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                if self._primary is None or self._primary.closed:
                    self._primary = await _monitor_connection(self.settings.database_url)
                row = await (await self._primary.execute(PRIMARY_QUERY)).fetchone()
        except (psycopg.Error, TimeoutError, OSError) as exc:
            if self._primary_known:
                log.warning("replica monitor: the primary's WAL position is unknown: %s", _why(exc))
            self._primary_known = False
            await _close(self._primary)
            self._primary = None
            return None
        self._primary_known = True
        return parse_lsn(str(row[0])) if row and row[0] else None

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                state = await self._state(replica)
        except (psycopg.Error, TimeoutError, OSError) as exc:
            await self._unreachable(replica, _why(exc))
            return
        in_recovery, replay, paused, replay_age = state
        if not in_recovery or replay is None:
            await self._unreachable(replica, "not in recovery: it is not a replica (promoted?)")
            return
        await self._observe(replica, parse_lsn(str(replay)), bool(paused), replay_age)

    async def _state(self, replica: Replica) -> tuple[Any, ...]:
        conn = replica.monitor
        if conn is None or conn.closed:
            conn = replica.monitor = await _monitor_connection(replica.url)
        row = await (await conn.execute(STATE_QUERY)).fetchone()
        assert row is not None
        return tuple(row)

    def _staleness(self, replay: int) -> float:
        """How old, at most, is what a replica shows that has replayed up to `replay`: the time since the
        newest check at which the primary had written no further (it has all the primary had then)."""
        now = time.monotonic()
        for at, position in reversed(self._positions):
            if position <= replay:
                return now - at
        return math.inf  # further behind than the positions kept, which span more than the lag bound

    async def _observe(self, replica: Replica, replay: int, paused: bool, replay_age: float | None) -> None:
        """A replica that answered: its lag, whether it is within the bound, a fresh pool after an outage."""
        behind = None if self.primary_lsn is None else max(0, self.primary_lsn - replay)
        lag = 0.0
        if behind:
            # the age of the newest replayed commit, bounded by the positions seen: after a quiet spell
            # one new commit must not make a replica look hours late, nor WAL without commits (vacuum)
            # one that has replayed everything but the last few bytes
            lag = min(replay_age if replay_age is not None else math.inf, self._staleness(replay))
        healthy = lag <= self.config.max_lag
        if not replica.reachable or replica.pool is None:
            await self._renew_pool(replica)
        replica.reachable, replica.healthy, replica.paused = True, healthy, paused
        replica.replay_lsn, replica.lag_bytes, replica.lag_seconds = replay, behind, lag
        self.metrics.show(replica)
        if healthy:
            _tell(replica, "in use", logging.INFO, f"in use, {lag:.1f} s behind the primary")
        else:
            bound = self.config.max_lag
            _tell(
                replica, "lagging", logging.WARNING, f"skipped: {lag:.1f} s behind (the bound is {bound:g} s)"
            )

    async def _unreachable(self, replica: Replica, why: str) -> None:
        _tell(replica, "down", logging.WARNING, f"down, reads go to the primary: {why}")
        replica.reachable = replica.healthy = False
        replica.lag_bytes = replica.lag_seconds = None
        monitor, replica.monitor = replica.monitor, None
        await _close(monitor)
        self.metrics.show(replica)

    async def _renew_pool(self, replica: Replica) -> None:
        """A new pool for a replica that answers again; the old one is closed in the background."""
        old = replica.pool
        settings = self.settings
        replica.pool = db.connection_pool(
            replica.url,
            min_size=min(settings.pool_min, self.config.pool_max),
            max_size=self.config.pool_max,
            timeout=settings.pool_timeout,
            application_name="commercecore-gateway",
            configure=guard.check_async_connection,
        )
        await replica.pool.open(wait=False)
        if old is not None:
            task = asyncio.create_task(old.close(), name=f"close-replica-pool {replica.label}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        await _close(self._primary)
        for replica in self.replicas:
            await _close(replica.monitor)
            if replica.pool is not None:
                await replica.pool.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


async def _monitor_connection(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        url,
        autocommit=True,
        connect_timeout=int(CHECK_TIMEOUT),
        application_name="commercecore-gateway-monitor",
    )


async def _close(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


def _tell(replica: Replica, status: str, level: int, message: str) -> None:
    """Logs a replica's new status once, not at every check."""
    if replica.status != status:
        replica.status = status
        log.log(level, "replica %s: %s", replica.label, message)


def _why(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
