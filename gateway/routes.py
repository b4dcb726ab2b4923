"""The route table built from the schema cache: which endpoint a (method, path) reaches.

Three kinds of endpoint, matched in this order:
- routes declared in comments (`@route POST /orders/{order_id}/cancel`): path parameters bind to the
  function's arguments of the same name, JSON body keys (or query parameters on GET) to the others;
- `/rpc/{function}`: POST with a JSON object, GET with query parameters for STABLE/IMMUTABLE functions;
- `/{view}`: GET/HEAD in the PostgREST read dialect.

The table also keeps the plans and statements of the reads served lately (gateway.handler): they depend
on the schema cache, so a reload, which builds a new table, forgets them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.caches import BoundedCache
from gateway.schema_cache import Function, RouteDecl, SchemaCache, View
from gateway.settings import RequestLimits

if TYPE_CHECKING:
    from gateway.query import Query


@dataclass(frozen=True)
class Endpoint:
    """What a (method, path) serves: a view or a function (its overloads), and how it was reached."""

    kind: str  # "route" | "rpc" | "view"
    template: str
    view: View | None = None
    functions: tuple[Function, ...] = ()
    route: RouteDecl | None = None


@dataclass(frozen=True)
class _Compiled:
    method: str
    pattern: re.Pattern[str]
    endpoint: Endpoint
    specificity: tuple[int, int]


@dataclass(frozen=True)
class Match:
    """The endpoint of a (method, path) with its path parameters; without one, the methods the path
    allows (none: 404)."""

    endpoint: Endpoint | None = None
    params: dict[str, str] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()


def _pattern(route: RouteDecl) -> re.Pattern[str]:
    parts = []
    for segment in route.segments:
        if segment.startswith("{"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + "$")


class RouteTable:
    """The declared routes of a schema cache, most specific first (more literal segments win), and the
    statements of the reads served lately (by URL and the headers that shape a read), bounded in bytes."""

    def __init__(self, schema: SchemaCache, limits: RequestLimits | None = None) -> None:
        self.schema = schema
        self.limits = limits or RequestLimits()
        self.warnings: list[str] = []
        self.reads: BoundedCache[tuple[Any, ...], Query] = BoundedCache(
            self.limits.statement_cache_bytes, self.limits.statement_cache_max_entry
        )
        compiled: dict[tuple[str, str], _Compiled] = {}
        declared: list[tuple[RouteDecl, Endpoint]] = []
        for view in schema.views.values():
            for route in view.routes:
                declared.append((route, Endpoint("route", route.template, view=view, route=route)))
        for overloads in schema.functions.values():
            for fn in overloads:
                for route in fn.routes:
                    declared.append((route, Endpoint("route", route.template, functions=(fn,), route=route)))
        for route, endpoint in sorted(declared, key=lambda item: (item[0].template, item[0].method)):
            # the same shape of path ({a} and {b} alike) with the same method is one route
            shape = re.sub(r"\{[^}]+\}", "{}", route.template)
            key = (route.method, shape)
            if key in compiled:
                other = compiled[key].endpoint
                self.warnings.append(
                    f"@route {route.method} {route.template} of {_target_name(endpoint)} ignored: "
                    f"{_target_name(other)} declares it too"
                )
                continue
            literal = sum(1 for s in route.segments if not s.startswith("{"))
            compiled[key] = _Compiled(route.method, _pattern(route), endpoint, (literal, len(route.segments)))
        self.routes = sorted(compiled.values(), key=lambda c: c.specificity, reverse=True)

    def match(self, method: str, path: str) -> Match:
        """The endpoint for (method, path); without one, the methods the path allows (405 vs 404)."""
        wanted = "GET" if method == "HEAD" else method
        endpoint: Endpoint | None = None
        params: dict[str, str] = {}
        allowed: set[str] = set()
        for compiled in self.routes:
            found = compiled.pattern.match(path)
            if not found:
                continue
            if compiled.method == wanted and endpoint is None:
                endpoint = compiled.endpoint
                params = found.groupdict()
            allowed.add(compiled.method)
        if endpoint is not None:
            return Match(endpoint, params, frozenset(allowed))
        generic = self._generic(wanted, path)
        return Match(generic.endpoint, generic.params, generic.allowed | allowed)

    def remember(self, key: tuple[Any, ...], query: Query) -> None:
        """Keeps a read's plan and statements for the next request with the same key, unless they are
        large: a client that sends ever new URLs (keyset pages, URL-sized filters) only drops old entries."""
        size = sum(len(part) for part in key if isinstance(part, str | bytes))
        self.reads.put(key, query, size + query.size)

    def _generic(self, method: str, path: str) -> Match:
        segments = path.strip("/").split("/")
        if len(segments) == 2 and segments[0] == "rpc":
            overloads = self.schema.functions.get(segments[1])
            if overloads is None:
                return Match()
            allowed = frozenset({"POST"}) | ({"GET"} if any(fn.read_only for fn in overloads) else set())
            if method not in allowed:
                return Match(allowed=allowed)
            candidates = overloads if method == "POST" else tuple(fn for fn in overloads if fn.read_only)
            return Match(Endpoint("rpc", "/rpc/{function}", functions=candidates), allowed=allowed)
        if len(segments) == 1 and segments[0]:
            view = self.schema.views.get(segments[0])
            if view is None:
                return Match()
            if method != "GET":
                return Match(allowed=frozenset({"GET"}))
            return Match(Endpoint("view", "/{view}", view=view), allowed=frozenset({"GET"}))
        return Match()


def _target_name(endpoint: Endpoint) -> str:
    if endpoint.view is not None:
        return f"view api.{endpoint.view.name}"
    return f"function {endpoint.functions[0].signature}"
