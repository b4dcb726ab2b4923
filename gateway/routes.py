"""The route table built from the schema cache, and the handler that serves it.

Three kinds of endpoint, matched in this order:
- routes declared in comments (`@route POST /orders/{order_id}/cancel`): path parameters bind to the
  function's arguments of the same name, JSON body keys (or query parameters on GET) to the others;
- `/rpc/{function}`: POST with a JSON object, GET with query parameters for STABLE/IMMUTABLE functions;
- `/{view}`: GET/HEAD in the PostgREST read dialect.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from gateway import db
from gateway.caches import BoundedCache
from gateway.catalog import Catalog, Function, RouteDecl, View
from gateway.errors import (
    RETRYABLE,
    ApiError,
    bad_request,
    database_failure,
    missing_argument,
    not_found,
    unknown_argument,
)
from gateway.http import check_accept, check_profile, headers_of, read_json_object, url_path
from gateway.query import (
    Filter,
    Fragment,
    RawText,
    ReadPlan,
    Source,
    call_statement,
    content_range,
    function_call,
    ident,
    parse_read,
    planned_rows,
    read_statements,
)
from gateway.settings import RequestLimits, Settings

log = logging.getLogger("commercecore.gateway")

IDEMPOTENCY_HEADER = "idempotency-key"
# the headers a read's statements depend on (with its method, path and query string)
_READ_HEADERS = ("range", "range-unit", "prefer", "accept", IDEMPOTENCY_HEADER)
IDEMPOTENCY_ARGUMENT = "idempotency_key"
JSON_MEDIA_TYPE = "application/json; charset=utf-8"
_FORBIDDEN_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "content-type",
        "x-request-id",
        "keep-alive",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
# visible ASCII, spaces and tabs (RFC 9110 field values without obs-text): nothing the HTTP layer rejects
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]{0,4096}$")


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


@dataclass
class Match:
    endpoint: Endpoint | None = None
    params: dict[str, str] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)


def _pattern(route: RouteDecl) -> re.Pattern[str]:
    parts = []
    for segment in route.segments:
        if segment.startswith("{"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + "$")


class RouteTable:
    """The declared routes of a catalog, most specific first (more literal segments win), and the
    statements of the reads served lately (by URL and the headers that shape a read), bounded in bytes."""

    def __init__(self, catalog: Catalog, limits: RequestLimits | None = None) -> None:
        self.catalog = catalog
        self.limits = limits or RequestLimits()
        self.warnings: list[str] = []
        self.prepared: BoundedCache[tuple[Any, ...], Prepared] = BoundedCache(
            self.limits.statement_cache_bytes, self.limits.statement_cache_max_entry
        )
        compiled: dict[tuple[str, str], _Compiled] = {}
        declared: list[tuple[RouteDecl, Endpoint]] = []
        for view in catalog.views.values():
            for route in view.routes:
                declared.append((route, Endpoint("route", route.template, view=view, route=route)))
        for overloads in catalog.functions.values():
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
        result = Match()
        for compiled in self.routes:
            found = compiled.pattern.match(path)
            if not found:
                continue
            if compiled.method == wanted and result.endpoint is None:
                result.endpoint = compiled.endpoint
                result.params = found.groupdict()
            result.allowed.add(compiled.method)
        if result.endpoint is not None:
            return result
        generic = self._generic(wanted, path)
        generic.allowed |= result.allowed
        return generic

    def remember(self, key: tuple[Any, ...], prepared: Prepared) -> None:
        """Keeps a read's statements for the next request with the same key, unless they are large: a
        client that sends ever new URLs (keyset pages, URL-sized filters) only drops old entries."""
        size = sum(len(part) for part in key if isinstance(part, str | bytes))
        for statement in prepared.statements:
            size += len(str(statement.query)) + sum(len(str(value)) for value in statement.params)
        self.prepared.put(key, prepared, size)

    def _generic(self, method: str, path: str) -> Match:
        segments = path.strip("/").split("/")
        if len(segments) == 2 and segments[0] == "rpc":
            overloads = self.catalog.functions.get(segments[1])
            if overloads is None:
                return Match()
            allowed = {"POST"} | ({"GET"} if any(fn.read_only for fn in overloads) else set())
            if method not in allowed:
                return Match(allowed=allowed)
            candidates = overloads if method == "POST" else tuple(fn for fn in overloads if fn.read_only)
            return Match(Endpoint("rpc", "/rpc/{function}", functions=candidates), allowed=allowed)
        if len(segments) == 1 and segments[0]:
            view = self.catalog.views.get(segments[0])
            if view is None:
                return Match()
            if method != "GET":
                return Match(allowed={"GET"})
            return Match(Endpoint("view", "/{view}", view=view), allowed={"GET"})
        return Match()


def _target_name(endpoint: Endpoint) -> str:
    if endpoint.view is not None:
        return f"view api.{endpoint.view.name}"
    return f"function {endpoint.functions[0].signature}"


# -- binding arguments ---------------------------------------------------------------------------------


def choose_function(overloads: Sequence[Function], names: set[str]) -> Function:
    """The overload whose arguments fit the given names (PostgREST picks by argument names too)."""
    if len(overloads) == 1:
        return overloads[0]
    fitting = [
        fn
        for fn in overloads
        if names <= {a.name for a in fn.args} and {a.name for a in fn.args if not a.has_default} <= names
    ]
    if len(fitting) == 1:
        return fitting[0]
    name = overloads[0].name
    if not fitting:
        raise ApiError(
            404,
            "PGRST202",
            f"Could not find a function api.{name} with the arguments"
            f" {', '.join(sorted(names)) or '(none)'}.",
            details={"code": "not_found", "resource": "function", "arguments": sorted(names)},
            hint="The signatures are listed in /openapi.json.",
        )
    raise ApiError(
        300,
        "PGRST203",
        f"More than one api.{name} takes the arguments {', '.join(sorted(names)) or '(none)'}.",
        details={"code": "ambiguous_function", "candidates": [fn.signature for fn in fitting]},
        hint="Overloaded functions need argument names that tell them apart.",
    )


@dataclass
class Binding:
    function: Function
    values: dict[str, Any]
    read_params: list[tuple[str, str]]


def bind_arguments(
    overloads: Sequence[Function],
    *,
    method: str,
    path_params: Mapping[str, str],
    body: Mapping[str, Any] | None,
    query: Sequence[tuple[str, str]],
    idempotency_key: str | None,
) -> Binding:
    """Path parameters, then the JSON body (or the query on GET), then Idempotency-Key -> arguments."""
    all_args = {a.name for fn in overloads for a in fn.args}
    query_args: dict[str, list[str]] = {}
    read_params: list[tuple[str, str]] = []
    for key, value in query:
        if method == "GET" and key in all_args:
            query_args.setdefault(key, []).append(value)
        else:
            read_params.append((key, value))
    names = set(path_params) | set(body or {}) | set(query_args)
    if idempotency_key is not None and IDEMPOTENCY_ARGUMENT in all_args:
        names.add(IDEMPOTENCY_ARGUMENT)
    fn = choose_function(overloads, names)
    label = f"api.{fn.name}"
    values: dict[str, Any] = {}
    for name, value in path_params.items():
        values[name] = RawText(value)
    for name, value in (body or {}).items():
        arg = fn.argument(name)
        if arg is None:
            raise unknown_argument(label, name)
        if name in values:
            raise bad_request(
                f"{name!r} is given in the path; leave it out of the body.", "duplicate_argument", field=name
            )
        values[name] = value
    for name, items in query_args.items():
        arg = fn.argument(name)
        if arg is None:
            raise unknown_argument(label, name)
        if name in values:
            raise bad_request(
                f"{name!r} is given in the path; leave it out of the query.", "duplicate_argument", field=name
            )
        if len(items) > 1 and not arg.type.is_array:
            raise bad_request(f"{name!r} is given {len(items)} times.", "duplicate_argument", field=name)
        values[name] = [RawText(i) for i in items] if len(items) > 1 else RawText(items[0])
    if idempotency_key is not None and fn.argument(IDEMPOTENCY_ARGUMENT) is not None:
        if IDEMPOTENCY_ARGUMENT in values and values[IDEMPOTENCY_ARGUMENT] != idempotency_key:
            raise bad_request(
                "The Idempotency-Key header and the idempotency_key field differ.",
                "duplicate_argument",
                field=IDEMPOTENCY_ARGUMENT,
            )
        values[IDEMPOTENCY_ARGUMENT] = RawText(idempotency_key)
    for arg in fn.args:
        if not arg.has_default and arg.name not in values:
            raise missing_argument(label, arg.name)
    if read_params and not (fn.result == "rows" and fn.returns_set):
        key = read_params[0][0]
        if method == "GET":
            raise unknown_argument(label, key)
        raise bad_request(
            f"{label} returns no rows to filter: query parameter {key!r} is not understood.",
            "unknown_parameter",
            field=key,
        )
    return Binding(fn, values, read_params)


# -- the handler ---------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """The statements of a request and how to turn their results into a response."""

    statements: list[db.Statement]
    read_only: bool
    kind: str  # "read" (a collection), "single" (a path-addressed row), "call"
    plan: ReadPlan | None = None
    default_status: int = 200


def _statement(fragment: Fragment, *, response: bool = False) -> db.Statement:
    return db.Statement(fragment.query, fragment.params, fragment.fields, raw_text=True, response=response)


def prepare_read(source: Fragment, plan: ReadPlan, catalog: Catalog, *, head: bool) -> list[db.Statement]:
    statements = read_statements(source, plan, catalog, head=head)
    result = [_statement(statements.main, response=True)]
    if statements.explain is not None:
        result.append(_statement(statements.explain))
    return result


def read_plan(
    request: Request,
    source: Source,
    query: Sequence[tuple[str, str]],
    settings: Settings,
    anonymous: bool,
) -> ReadPlan:
    """The read dialect of a request over a source; an anonymous caller's exact count is bounded (counted up
    to the anonymous count limit, the planner's estimate above it, as count=estimated does)."""
    plan = parse_read(query, source, headers_of(request), max_rows=settings.max_rows)
    if anonymous and plan.count == "exact" and settings.anonymous.count_limit:
        plan.count = "estimated"
        plan.count_limit = settings.anonymous.count_limit
    return plan


def prepare(
    request: Request,
    endpoint: Endpoint,
    params: Mapping[str, str],
    body: dict[str, Any] | None,
    catalog: Catalog,
    settings: Settings,
    *,
    anonymous: bool,
) -> Prepared:
    head = request.method == "HEAD"
    method = "GET" if head else request.method
    query = list(request.query_params.multi_items())
    if endpoint.view is not None:
        view = endpoint.view
        source = Source(f"api.{view.name}", view.columns, view.rules, settings.limits)
        plan = read_plan(request, source, query, settings, anonymous)
        kind = "read"
        if params:
            # a path-addressed row of a view: /orders/{id} filters id = the path value, one object
            for name, value in params.items():
                plan.where.append(Filter(view.columns[name], "eq", value))
            plan.singular = True
            kind = "single"
        sql = Fragment(ident("api", view.name))
        return Prepared(prepare_read(sql, plan, catalog, head=head), True, kind, plan)

    binding = bind_arguments(
        endpoint.functions,
        method=method,
        path_params=params,
        body=body,
        query=query,
        idempotency_key=headers_of(request).get(IDEMPOTENCY_HEADER),
    )
    fn = binding.function
    call = function_call(fn, binding.values, catalog)
    read_only = method == "GET" or fn.read_only
    if fn.result == "rows" and fn.returns_set:
        source = Source(f"api.{fn.name}", fn.columns, fn.rules, settings.limits)
        plan = read_plan(request, source, binding.read_params, settings, anonymous)
        sql = call + " as _src"
        return Prepared(prepare_read(sql, plan, catalog, head=head), read_only, "read", plan)
    return Prepared(
        [_statement(call_statement(fn, call), response=True)],
        read_only,
        "call",
        default_status=204 if fn.result == "void" else 200,
    )


def response_headers(raw: str | None) -> list[tuple[str, str]]:
    """`response.headers` as PostgREST reads it: [{"Name": "value"}, ...] (an object is accepted too)."""
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("response.headers is not JSON: %.200s", raw)
        return []
    items = value if isinstance(value, list) else [value]
    headers: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        for name, header_value in item.items():
            text = header_value if isinstance(header_value, str) else json.dumps(header_value)
            if (
                not _HEADER_NAME.match(name)
                or name.lower() in _FORBIDDEN_HEADERS
                or not _HEADER_VALUE.match(text)
            ):
                log.warning("response.headers: header %.100r ignored", name)
                continue
            headers.append((name, text))
    return headers


def response_status(raw: str | None, default: int) -> int:
    if not raw:
        return default
    try:
        status = int(raw)
    except ValueError:
        log.warning("response.status %.50r is not a number", raw)
        return default
    return status if 100 <= status <= 599 else default


def type_error(exc: db.StatementError, authenticated: bool) -> ApiError:
    """A database error; a value PostgreSQL could not parse names the argument or column it belongs to."""
    error = ApiError.from_database(exc.error, authenticated=authenticated)
    sqlstate = exc.error.sqlstate or ""
    if sqlstate.startswith("22") and exc.statement is not None:
        field_name = db.failed_parameter(exc.error, exc.statement.fields)
        if field_name is not None:
            error = ApiError(
                400,
                sqlstate,
                f"{field_name}: {exc.error.diag.message_primary}",
                details={"code": "invalid_input", "field": field_name},
                hint=error.hint,
            )
    return error


async def _run(request: Request, prepared: Prepared, identity: db.Identity, catalog: Catalog) -> db.Result:
    """The statements on a pooled connection; an anonymous request first waits for its share of the pool."""
    gateway = request.app.state.gateway
    settings: Settings = gateway.settings
    run = functools.partial(
        db.run,
        request.app.state.pool,
        identity,
        prepared.statements,
        role_settings=catalog.role_settings,
        read_only=prepared.read_only,
        request_id=request.state.request_id,
        method=request.method,
        path=url_path(request.scope),
        prepare=settings.prepared_statements,
        shop_settings=settings.order_settings,
    )
    if identity.authenticated:
        return await run(timeout=settings.pool_timeout)
    async with gateway.anonymous.hold(settings.pool_timeout) as wait:
        return await run(timeout=wait)


async def execute(request: Request, prepared: Prepared, identity: db.Identity, catalog: Catalog) -> db.Result:
    gateway = request.app.state.gateway
    for attempt in (1, 2):
        try:
            return await _run(request, prepared, identity, catalog)
        except db.StatementError as exc:
            sqlstate = exc.error.sqlstate or ""
            request.state.sqlstate = sqlstate
            if sqlstate in RETRYABLE and attempt == 1:
                log.info("retrying after %s (%s)", sqlstate, exc.error.diag.message_primary)
                continue
            error = type_error(exc, identity.authenticated)
            if error.status >= 500:
                log.error(
                    "database error %s on %s %s: %s",
                    sqlstate,
                    request.method,
                    url_path(request.scope),
                    str(exc.error).strip(),
                )
            raise error from None
        except db.SessionInactive:
            raise gateway.auth.session_ended() from None
        except psycopg.OperationalError as exc:  # no free connection (PoolTimeout), or it broke
            if not isinstance(exc, PoolTimeout):
                log.error("database unreachable: %s", str(exc).strip())
            raise database_failure(exc, authenticated=identity.authenticated) from None
    raise AssertionError("unreachable")


def build_response(request: Request, prepared: Prepared, result: db.Result) -> Response:
    head = request.method == "HEAD"
    rows = result.rows[0]
    headers: list[tuple[str, str]] = []
    if prepared.kind == "call":
        body: bytes | None = rows[0][0] if rows else None
        status = response_status(result.status, prepared.default_status)
        if status in (204, 205, 304) or status < 200:
            body = None  # these statuses have no body, whatever the function returned
        elif body is None:
            body = b"null"
    else:
        plan = prepared.plan
        assert plan is not None
        body, page_rows, total = rows[0]
        if plan.count in ("planned", "estimated") and len(result.rows) > 1:
            planned = planned_rows(result.rows[1])
            if plan.count == "planned" or total is None or total > plan.count_limit:
                total = planned
        if plan.count is None:
            total = None
        headers.append(("Content-Range", content_range(plan.offset, page_rows, total)))
        status = 200
        if prepared.kind == "single" or plan.singular:
            if page_rows != 1:
                if prepared.kind == "single" and page_rows == 0:
                    raise ApiError(
                        404,
                        "PGRST116",
                        "No row at this address.",
                        details={"code": "not_found", "resource": url_path(request.scope)},
                    )
                raise ApiError(
                    406,
                    "PGRST116",
                    f"A single JSON object was requested but the result has {page_rows} rows.",
                    details={"code": "not_single", "rows": page_rows},
                )
        elif total is not None and plan.offset > 0 and plan.offset >= total:
            raise ApiError(
                416,
                "PGRST103",
                f"The range starts at {plan.offset} but there are {total} rows.",
                details={"code": "range_not_satisfiable", "total": total},
                headers={"Content-Range": f"*/{total}"},
            )
        elif total is not None and page_rows < total:
            status = 206
        status = response_status(result.status, status)
    headers.extend(response_headers(result.headers))
    content = b"" if head or body is None else body
    response = Response(content, status_code=status, media_type=JSON_MEDIA_TYPE if body is not None else None)
    if head and body is not None:
        response.headers["content-length"] = str(len(body))
    for name, value in headers:
        response.headers.append(name, value)
    request_headers = headers_of(request)
    profile = request_headers.get("accept-profile") or request_headers.get("content-profile")
    if profile:
        response.headers["Content-Profile"] = "api"
    return response


def prepared_read(
    request: Request,
    table: RouteTable,
    endpoint: Endpoint,
    params: Mapping[str, str],
    settings: Settings,
    anonymous: bool,
) -> Prepared:
    """A read's statements, kept for the next request with the same URL, the same headers that shape a read
    and the same kind of caller (an anonymous count is bounded)."""
    key = (
        request.method,
        request.scope["path"],
        request.scope["query_string"],
        anonymous,
        *map(headers_of(request).get, _READ_HEADERS),
    )
    cached = table.prepared.get(key)
    if cached is None:
        cached = prepare(request, endpoint, params, None, table.catalog, settings, anonymous=anonymous)
        table.remember(key, cached)
    return cached


async def dispatch(request: Request) -> Response:
    """Every path the gateway does not serve itself: declared routes, /rpc/{fn}, /{view}."""
    gateway = request.app.state.gateway
    request.state.route = "unmatched"
    check_profile(request)
    check_accept(request)
    catalog, table = await gateway.schema()
    match = table.match(request.method, request.scope["path"])
    if match.endpoint is None:
        if request.method == "OPTIONS" and match.allowed:
            allowed = sorted(match.allowed | ({"HEAD"} if "GET" in match.allowed else set()) | {"OPTIONS"})
            request.state.route = "OPTIONS"
            return Response(status_code=204, headers={"Allow": ", ".join(allowed)})
        if match.allowed:
            allowed = sorted(match.allowed | ({"HEAD"} if "GET" in match.allowed else set()))
            raise ApiError(
                405,
                "PGRST117",
                f"{request.method} is not allowed here; allowed: {', '.join(allowed)}.",
                details={"code": "method_not_allowed", "allowed": allowed},
                headers={"Allow": ", ".join(allowed)},
            )
        path = url_path(request.scope)
        if path.startswith("/rpc/"):
            name = path[5:]
            raise ApiError(
                404,
                "PGRST202",
                f"Could not find the function api.{name} in the schema cache.",
                details={"code": "not_found", "resource": "function", "name": name},
                hint="The functions are listed in /openapi.json.",
            )
        raise not_found(path)
    endpoint = match.endpoint
    request.state.route = endpoint.template
    identity = gateway.authenticate(request)
    request.state.role = identity.role
    request.state.user_id = identity.user_id
    anonymous = not identity.authenticated
    body: dict[str, Any] | None = None
    if request.method not in ("GET", "HEAD"):
        if endpoint.functions:
            body = await read_json_object(request, gateway.settings.body_limit)
        prepared = prepare(
            request, endpoint, match.params, body, catalog, gateway.settings, anonymous=anonymous
        )
    else:
        prepared = prepared_read(request, table, endpoint, match.params, gateway.settings, anonymous)
    result = await execute(request, prepared, identity, catalog)
    return build_response(request, prepared, result)
