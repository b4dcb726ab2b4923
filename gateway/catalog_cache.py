"""The catalog cache: anonymous reads of the public catalog answered from the worker's memory, kept true by
the database.

What it holds: the 200 replies (gateway.response.Reply) of anonymous GET and HEAD requests to `api.products`,
`api.categories`, `get_product` and `search_products`, the reads whose tables notify (schema/catalog_notify).
Nothing with an identity, no write, no other endpoint, no other status, no reply whose function set its own
status or headers is ever kept, and a signed-in request never looks here. The key is the request as the plan
understands it, not its URL: the endpoint, the selected columns, the filters in any order, the order, the
page, the count and whether one object was asked for (Accept), a call's arguments with the defaults of those
left out (`?q=hat` and `?limit=20&q=hat` are one entry).

How it stays true: the catalog's triggers send NOTIFY commercecore_catalog when a transaction commits, and a
dedicated connection per worker listens (`CatalogListener`). A change of what the catalog shows empties the
whole cache (the search reads categories, and catalog changes are rare: one generation, no dependency
tracking). An order moves stock: its `stock` notification only counts, and a page showing stock (or what
moves with it: updated_at, a stock filter) is served at most `staleness` seconds after it was read once a
stock notification came after that read (so stock is never older than the bound, and a quiet catalog is
served from memory indefinitely). A fill that raced a change is dropped: the cache's generation at the lookup
must still be the current one when the reply is kept. Until the listener has LISTENed and seen its own probe
notification arrive, and from the moment its connection is lost, the cache is empty and bypassed: requests go
to the database. A schema reload empties it too. Memory is bounded in bytes (gateway.caches.BoundedCache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg import sql

from gateway import background
from gateway.caches import BoundedCache
from gateway.dialect import Filter, Logic, ReadPlan
from gateway.plan import Call, Plan
from gateway.query import Query
from gateway.response import Reply
from gateway.settings import CatalogCacheLimits

log = logging.getLogger("commercecore.gateway")

CHANNEL = "commercecore_catalog"
APPLICATION_NAME = "commercecore-catalog-listener"
# the listener's own notifications, sent through the request pool to see that NOTIFY reaches it
PROBE_PREFIX = "probe:"
# the reads the catalog's triggers cover (schema/catalog_notify): a read of other tables would go stale
CACHED_VIEWS = frozenset({"products", "categories"})
CACHED_FUNCTIONS = frozenset({"get_product", "search_products"})
# the columns of api.products that move with every order: stock, and the updated_at its trigger stamps
STOCK_COLUMNS = frozenset({"stock", "updated_at"})
# an entry may take at most this share of the budget: one huge page never empties the cache
ENTRY_SHARE = 4
# a default PostgreSQL prints as the text a client would send for the same value
_LITERAL_DEFAULT = frozenset("0123456789-.")
INVALIDATIONS = ("change", "stock", "listener", "schema")


@dataclass(frozen=True, slots=True)
class CatalogKey:
    """Where an anonymous catalog read is kept, whether it shows stock, and about the bytes of the key."""

    value: tuple[Any, ...]
    stock: bool
    size: int


@dataclass(frozen=True, slots=True)
class Entry:
    reply: Reply
    stock: bool
    stock_seen: int  # the stock notifications counted when the read began
    started: float  # monotonic time when the read began


# -- the key: the request as the plan understands it --------------------------------------------------


def catalog_key(plan: Plan, staleness: float) -> CatalogKey | None:
    """The key of a catalog read's plan; None for anything else, and for a page showing stock when stock
    may not be stale at all (staleness 0)."""
    if plan.view is not None:
        name = plan.view.name
        if name not in CACHED_VIEWS:
            return None
        target: tuple[Any, ...] = ("view", name)
        stock = name == "products" and shows_stock(plan.read)
    else:
        if plan.call is None or plan.call.function.name not in CACHED_FUNCTIONS:
            return None
        target = ("call", plan.call.function.signature, call_values(plan.call))
        stock = True  # the product shape and the search's rows carry stock
    if stock and staleness <= 0:
        return None
    value = (plan.kind, target, read_key(plan.read))
    return CatalogKey(value, stock, len(repr(value)))


def call_values(call: Call) -> tuple[tuple[str, Any], ...]:
    """A call's arguments by name, each left out given as its default when the default is a plain literal
    (the text a client would send for it), else as the marker of that default."""
    values: list[tuple[str, Any]] = []
    for arg in call.function.args:
        if arg.name in call.values:
            given = call.values[arg.name]
            values.append((arg.name, tuple(map(str, given)) if isinstance(given, list) else str(given)))
        elif arg.default is not None:
            plain = set(arg.default) <= _LITERAL_DEFAULT or arg.default in ("true", "false")
            values.append((arg.name, arg.default if plain else ("default", arg.default)))
    return tuple(values)


def read_key(read: ReadPlan | None) -> tuple[Any, ...] | None:
    """A read's shape: filters are ANDed, so their order is not part of it; the rest is."""
    if read is None:
        return None
    return (
        tuple((alias, column.name) for alias, column in read.select),
        tuple(sorted((filter_key(item) for item in read.where), key=repr)),
        tuple((order.column.name, order.descending, order.nulls) for order in read.order),
        read.offset,
        read.limit,
        read.count,
        read.count_limit,
        read.singular,
    )


def filter_key(item: Filter | Logic) -> tuple[Any, ...]:
    if isinstance(item, Logic):
        inner = sorted((filter_key(sub) for sub in item.items), key=repr)
        return ("logic", item.operator, item.negate, tuple(inner))
    value = tuple(item.value) if isinstance(item.value, list) else item.value
    return ("filter", item.column.name, item.operator, value, item.negate, item.config)


def shows_stock(read: ReadPlan | None) -> bool:
    """Whether a read of api.products selects, filters or orders on what moves with stock."""
    if read is None:
        return True
    named = {column.name for _alias, column in read.select}
    named |= {order.column.name for order in read.order}
    named |= set(_filtered_columns(read.where))
    return bool(named & STOCK_COLUMNS)


def _filtered_columns(items: Sequence[Filter | Logic]) -> list[str]:
    found: list[str] = []
    for item in items:
        if isinstance(item, Logic):
            found.extend(_filtered_columns(item.items))
        else:
            found.append(item.column.name)
    return found


# -- the cache ----------------------------------------------------------------------------------------


class CacheMetrics:
    """The cache's samples in /metrics (summed over the workers in multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, text: str) -> Counter:
            return Counter(f"commercecore_catalog_cache_{name}", text, registry=registry)

        self.hits = counter("hits", "Anonymous catalog reads answered from the catalog cache.")
        self.misses = counter("misses", "Anonymous catalog reads the catalog cache did not have (or stale).")
        self.bypasses = counter(
            "bypasses", "Anonymous catalog reads sent to the database while the listener was not connected."
        )
        self.evictions = counter(
            "evictions", "Entries dropped to stay within COMMERCECORE_CATALOG_CACHE_BYTES."
        )
        invalidations = Counter(
            "commercecore_catalog_cache_invalidations",
            "Notifications and events that emptied the cache (change, listener, schema) or aged its stock "
            "pages (stock).",
            ["reason"],
            registry=registry,
        )
        self.invalidations = {reason: invalidations.labels(reason) for reason in INVALIDATIONS}
        self.bytes = Gauge(
            "commercecore_catalog_cache_bytes",
            "Bytes the catalog cache holds.",
            registry=registry,
            multiprocess_mode="livesum",
        )


class _Fill:
    """A miss: its reply is kept unless the cache changed generation since the lookup."""

    __slots__ = ("cache", "generation", "key", "started", "stock_seen")

    def __init__(self, cache: CatalogCache, key: CatalogKey, started: float) -> None:
        self.cache = cache
        self.key = key
        self.generation = cache.generation
        self.stock_seen = cache.stock_seen
        self.started = started

    def keep(self, reply: Reply) -> None:
        self.cache.keep(self, reply)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup's outcome: the reply to answer with (a hit), or where a miss's reply goes (`keep`)."""

    reply: Reply | None = None
    keep: Callable[[Reply], None] | None = None


NOT_CACHED = Lookup()


class CatalogCache:
    """One worker's catalog cache (see the module's docstring)."""

    def __init__(self, limits: CatalogCacheLimits, metrics: CacheMetrics) -> None:
        self.enabled = limits.max_bytes > 0
        self.staleness = limits.staleness
        self.entries: BoundedCache[tuple[Any, ...], Entry] = BoundedCache(
            limits.max_bytes, max(limits.max_bytes // ENTRY_SHARE, 1)
        )
        self.metrics = metrics
        self.live = False  # the listener is connected and notifications reach it
        self.generation = 0  # one more at every emptying: a fill begun before it is dropped
        self.stock_seen = 0  # the stock notifications so far

    def keyed(self, query: Query, anonymous: bool, method: str) -> Query:
        """The query with its catalog key when it is an anonymous catalog read (set once: the route
        table keeps the query for the next request with the same URL)."""
        if not (self.enabled and anonymous and method in ("GET", "HEAD")):
            return query
        key = catalog_key(query.plan, self.staleness)
        return query if key is None else replace(query, catalog=key)

    def lookup(self, query: Query, anonymous: bool) -> Lookup:
        key = query.catalog
        if key is None or not anonymous:
            return NOT_CACHED
        if not self.live:
            self.metrics.bypasses.inc()
            return NOT_CACHED
        now = time.monotonic()
        entry = self.entries.get(key.value)
        if entry is not None and self.fresh(entry, now):
            self.metrics.hits.inc()
            return Lookup(reply=entry.reply)
        self.metrics.misses.inc()
        return Lookup(keep=_Fill(self, key, now).keep)

    def fresh(self, entry: Entry, now: float) -> bool:
        """A page with stock is fresh until a stock notification came after its read began, then for the
        staleness bound from that beginning; any other entry until the cache is emptied."""
        return not entry.stock or entry.stock_seen == self.stock_seen or now - entry.started < self.staleness

    def keep(self, fill: _Fill, reply: Reply) -> None:
        if reply.status != 200 or reply.body is None or reply.custom:
            return
        if not self.live or fill.generation != self.generation:
            return  # a change arrived meanwhile: the reply may be of before it
        entry = Entry(reply, fill.key.stock, fill.stock_seen, fill.started)
        evicted = self.entries.evictions
        self.entries.put(fill.key.value, entry, reply.size + fill.key.size)
        if self.entries.evictions != evicted:
            self.metrics.evictions.inc(self.entries.evictions - evicted)
        self.metrics.bytes.set(self.entries.size)

    def empty(self, reason: str) -> None:
        self.generation += 1
        self.entries.clear()
        self.metrics.bytes.set(0)
        self.metrics.invalidations[reason].inc()

    def notified(self, payload: str) -> None:
        """A notification of the catalog's triggers: `<table>:stock` ages the stock pages, anything else
        empties the cache (an unknown payload too: emptying is always safe)."""
        if payload.startswith(PROBE_PREFIX):
            return
        if payload.endswith(":stock"):
            self.stock_seen += 1
            self.metrics.invalidations["stock"].inc()
            return
        self.empty("change")

    def connected(self) -> None:
        """The listener listens and notifications reach it: from now on nothing is missed."""
        self.empty("listener")
        self.live = True

    def disconnected(self) -> None:
        """The listener lost its connection: notifications may be missed, so nothing is kept or served."""
        if self.live:
            self.live = False
            self.empty("listener")


# -- the listener -------------------------------------------------------------------------------------


class ProbeLost(RuntimeError):
    """The listener's own notification did not arrive: NOTIFY does not reach its connection."""


class Prober(Protocol):
    def __call__(self, channel: str, payload: str) -> Awaitable[None]: ...


class CatalogListener:
    """LISTEN commercecore_catalog on a dedicated connection (autocommit), for one worker's catalog cache.

    Once listening it sends a probe notification through the request pool (`probe`) and makes the cache
    live only when the probe arrives: behind a transaction-pooling proxy, where a LISTEN stays behind on a
    server connection other clients get, it never does, and the cache stays bypassed (set
    COMMERCECORE_LISTEN_URL to PostgreSQL itself, or to PgBouncer in session mode). A lost connection
    empties and bypasses the cache; the listener reconnects with backoff (0.5 s doubling up to 30 s).
    """

    def __init__(self, conninfo: str, cache: CatalogCache, probe: Prober, *, wait: float) -> None:
        self.conninfo = conninfo
        self.cache = cache
        self.probe = probe
        self.wait = wait
        self.task: asyncio.Task[None] | None = None
        self.backend_pid: int | None = None  # the listening connection's server process
        self.delay = 0.5

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="catalog-listener")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            await background.stop(task)
        self.cache.disconnected()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection, the database restarting, a lost probe
                self.cache.disconnected()
                log.warning(
                    "catalog listener: %s; the catalog cache is bypassed, retrying in %.1f s",
                    str(exc).strip() or type(exc).__name__,
                    self.delay,
                )
            await asyncio.sleep(self.delay)
            self.delay = min(self.delay * 2, 30.0)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, application_name=APPLICATION_NAME
        ) as conn:
            await conn.execute(sql.SQL("listen {}").format(sql.Identifier(CHANNEL)))
            self.backend_pid = conn.info.backend_pid
            await self._await_probe(conn)
            self.cache.connected()
            self.delay = 0.5
            async for notify in conn.notifies():
                self.cache.notified(notify.payload)

    async def _await_probe(self, conn: psycopg.AsyncConnection[Any]) -> None:
        token = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        await self.probe(CHANNEL, token)
        # closed before the connection is: a suspended notifies() holds the connection's lock
        async with contextlib.aclosing(conn.notifies(timeout=self.wait)) as notifies:
            async for notify in notifies:
                if notify.payload == token:
                    return
        raise ProbeLost(
            "NOTIFY does not reach the listener (a transaction-pooling proxy between the gateway and "
            "PostgreSQL drops it): set COMMERCECORE_LISTEN_URL to PostgreSQL itself"
        )
