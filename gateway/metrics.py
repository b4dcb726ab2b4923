"""Prometheus metrics of the gateway: requests by route template, latency, pool, schema cache, and the rows
`commercecore jobs run` has purged (read from the database at each scrape: the jobs run elsewhere).

With several worker processes (`commercecore serve --workers N`, which then sets PROMETHEUS_MULTIPROC_DIR
before the workers start) every worker writes its samples to that directory and /metrics, whichever worker
answers it, reports the sum of all of them (prometheus-client's multiprocess mode).

Who may scrape: with COMMERCECORE_METRICS_TOKEN set, whoever sends it as a bearer token; without it, only a
client on the same host that connected directly (not through a proxy).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from gateway.errors import ApiError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
PUBLISH_INTERVAL = 5.0  # seconds between a worker's pool statistics updates in multiprocess mode
# pool statistics of psycopg_pool's get_stats(): levels are gauges, running totals counters
_POOL_GAUGES = {
    "pool_min": "Configured minimum connections.",
    "pool_max": "Configured maximum connections.",
    "pool_size": "Connections open now (in use, idle or being prepared).",
    "pool_available": "Idle connections ready for a request.",
    "requests_waiting": "Requests waiting for a connection now.",
}
_POOL_COUNTERS = {
    "requests_num": "Connection requests.",
    "requests_queued": "Connection requests that had to wait.",
    "requests_wait_ms": "Milliseconds spent waiting for a connection.",
    "requests_errors": "Connection requests that failed (timeout, pool closed).",
    "connections_num": "Connection attempts to the database.",
    "connections_errors": "Failed connection attempts.",
    "connections_lost": "Connections found broken.",
}

# headers a proxy adds when it relays a request: the request then comes from the proxy's client, whatever
# address the connection has (and a client can write them itself)
_RELAY_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def direct_loopback_client(scope: Scope) -> bool:
    """Whether the peer of the connection is a loopback address and the request names no other client.
    Without a relay header the server's client address is the socket's peer (a proxy-header middleware
    rewrites it only from those headers)."""
    if any(name in _RELAY_HEADERS for name, _value in scope["headers"]):
        return False
    client = scope.get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a Unix socket path
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def _digest(value: str) -> bytes:
    # compared as digests: equal lengths, so the comparison time says nothing about the token's length
    return hashlib.sha256(value.encode()).digest()


class PoolCollector(Collector):
    """Reads the pool's statistics at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int] | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        if stats is None:
            return
        for key, text in _POOL_GAUGES.items():
            gauge = GaugeMetricFamily(f"commercecore_db_{key}", text)
            gauge.add_metric([], stats.get(key, 0))
            yield gauge
        for key, text in _POOL_COUNTERS.items():
            counter = CounterMetricFamily(f"commercecore_db_{key}", text)
            counter.add_metric([], stats.get(key, 0))
            yield counter


class PurgedRowsCollector(Collector):
    """commercecore_purged_rows_total{table}: totals the database keeps (ops.purged_rows), read once per
    scrape; the same whichever worker or gateway answers."""

    def __init__(self, totals: Mapping[str, int]) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            "commercecore_purged_rows",
            "Rows purged by `commercecore jobs run` (sessions, login failures, idempotency keys).",
            labels=["table"],
        )
        for table, count in sorted(self.totals.items()):
            counter.add_metric([table], count)
        yield counter


def purged_rows_text(totals: Mapping[str, int]) -> bytes:
    registry = CollectorRegistry()
    registry.register(PurgedRowsCollector(totals))
    return generate_latest(registry)


class Metrics:
    """A registry per application (tests build many apps in one process)."""

    def __init__(
        self,
        pool_stats: Callable[[], dict[str, int] | None],
        *,
        token: str | None = None,
        purged: Callable[[], Awaitable[Mapping[str, int] | None]] | None = None,
    ) -> None:
        self._token_digest = _digest(token) if token else None
        self.purged = purged
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "commercecore_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "commercecore_http_request_duration_seconds",
            "Time from request to response, by method and route template.",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.database_errors = Counter(
            "commercecore_db_errors",
            "Database errors answered to clients, by SQLSTATE.",
            ["sqlstate"],
            registry=self.registry,
        )
        self.schema_reloads = Counter(
            "commercecore_schema_cache_reloads",
            "Schema cache loads, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        # routes are templates and methods a short list: the key space is small
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.pool_stats = pool_stats
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        if not self.multiprocess:
            self.registry.register(PoolCollector(pool_stats))
            return
        # a collector runs in the worker that answers the scrape only: each worker publishes its pool's
        # statistics instead (publish_pool), levels summed over the live workers, totals as counters
        self._pool_gauges = {
            key: Gauge(f"commercecore_db_{key}", text, registry=self.registry, multiprocess_mode="livesum")
            for key, text in _POOL_GAUGES.items()
        }
        self._pool_counters = {
            key: Counter(f"commercecore_db_{key}", text, registry=self.registry)
            for key, text in _POOL_COUNTERS.items()
        }
        self._pool_published: dict[str, int] = {}

    def publish_pool(self) -> None:
        """Multiprocess mode: this worker's pool statistics into the shared files."""
        stats = self.pool_stats()
        if not self.multiprocess or stats is None:
            return
        for key, gauge in self._pool_gauges.items():
            gauge.set(stats.get(key, 0))
        for key, counter in self._pool_counters.items():
            value = stats.get(key, 0)
            counter.inc(max(0, value - self._pool_published.get(key, 0)))
            self._pool_published[key] = value

    def observe(
        self, method: str, route: str, status: int, seconds: float, sqlstate: str | None = None
    ) -> None:
        # the labelled children, looked up once per (method, route, status): labels() takes a lock and
        # builds a tuple on every call
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)
        if sqlstate:
            self.database_errors.labels(sqlstate).inc()

    def authorize(self, scope: Scope) -> None:
        """401 without the metrics token (when one is set); 403 for anyone but a direct loopback client
        (when none is)."""
        if self._token_digest is None:
            if direct_loopback_client(scope):
                return
            raise ApiError(
                403,
                "CC403",
                "/metrics answers clients on the gateway's own host only.",
                details={"code": "metrics_forbidden"},
                hint="Set COMMERCECORE_METRICS_TOKEN and scrape with it as a bearer token.",
            )
        if not hmac.compare_digest(_digest(_bearer(scope)), self._token_digest):
            raise ApiError(
                401,
                "CC401",
                "/metrics needs the metrics token.",
                details={"code": "metrics_token_required"},
                hint="Send Authorization: Bearer <COMMERCECORE_METRICS_TOKEN>.",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )

    async def endpoint(self, request: Request) -> Response:
        request.state.route = "/metrics"
        self.authorize(request.scope)
        if self.multiprocess:
            self.publish_pool()
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            body = generate_latest(merged)
        else:
            body = generate_latest(self.registry)
        totals = await self.purged() if self.purged is not None else None
        if totals is not None:
            body += purged_rows_text(totals)
        return Response(body, media_type=CONTENT_TYPE)

    def process_exited(self) -> None:
        """Multiprocess mode: this worker's live gauges leave the sums."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def pool_stats(state: Any) -> Callable[[], dict[str, int] | None]:
    """get_stats() of `state.pool` once the lifespan has opened it."""

    def read() -> dict[str, int] | None:
        pool = getattr(state, "pool", None)
        if pool is None:
            return None
        stats: dict[str, int] = pool.get_stats()
        return stats

    return read
