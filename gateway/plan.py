"""The plan stage: an ApiRequest -> a Plan, what the request asks of the database and in what form.

A view is read in the read dialect (a path-addressed row of it, `/orders/{order_id}`, is one object). A
function call binds its arguments from the path, the JSON body (or the query string on GET) and the
Idempotency-Key header, choosing the overload by the names given; a function returning rows is read in
the dialect over its result. No SQL is written here (gateway.query does), and nothing is read from the
HTTP request but the ApiRequest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.dialect import Filter, RawText, ReadPlan, Source, parse_read
from gateway.errors import ApiError, bad_request, missing_argument, unknown_argument
from gateway.request import ApiRequest
from gateway.schema_cache import Function, View
from gateway.settings import Settings

IDEMPOTENCY_ARGUMENT = "idempotency_key"


@dataclass(frozen=True)
class Call:
    """A function and the values of its arguments (RawText: text for PostgreSQL to parse)."""

    function: Function
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Plan:
    """What a request asks of the database: a read of a view, or a function call (whose rows may be read
    in the dialect), and how its result becomes a response."""

    kind: str  # "read" (a collection), "single" (a path-addressed row), "call"
    read_only: bool
    head: bool  # HEAD: the same statements without the body
    view: View | None = None
    call: Call | None = None
    read: ReadPlan | None = None  # the read dialect over the view or the function's rows
    default_status: int = 200
    # a GET or HEAD of a view or of a STABLE or IMMUTABLE function: a streaming replica may answer it
    replica_safe: bool = False


def make_plan(api: ApiRequest, settings: Settings) -> Plan:
    """The plan of a request to an endpoint; 400 (and 404, 300 for a function) naming what is wrong."""
    endpoint = api.endpoint
    assert endpoint is not None, "an OPTIONS request has no plan"
    if endpoint.view is not None:
        return view_plan(api, endpoint.view, settings)
    return call_plan(api, endpoint.functions, settings)


def view_plan(api: ApiRequest, view: View, settings: Settings) -> Plan:
    source = Source(f"api.{view.name}", view.columns, view.rules, settings.limits)
    read = read_plan(api, source, api.query, settings)
    safe = api.read_method == "GET"
    if not api.target.params:
        return Plan("read", True, api.head, view=view, read=read, replica_safe=safe)
    # a path-addressed row of a view: /orders/{id} filters id = the path value, one object
    for name, value in api.target.params.items():
        read.where.append(Filter(view.columns[name], "eq", value))
    read.singular = True
    return Plan("single", True, api.head, view=view, read=read, replica_safe=safe)


def call_plan(api: ApiRequest, overloads: Sequence[Function], settings: Settings) -> Plan:
    binding = bind_arguments(
        overloads,
        method=api.read_method,
        path_params=api.target.params,
        body=api.body,
        query=api.query,
        idempotency_key=api.idempotency_key,
    )
    fn = binding.function
    call = Call(fn, binding.values)
    read_only = api.read_method == "GET" or fn.read_only
    safe = api.read_method == "GET" and fn.read_only
    if fn.result == "rows" and fn.returns_set:
        source = Source(f"api.{fn.name}", fn.columns, fn.rules, settings.limits)
        read = read_plan(api, source, binding.read_params, settings)
        return Plan("read", read_only, api.head, call=call, read=read, replica_safe=safe)
    status = 204 if fn.result == "void" else 200
    return Plan("call", read_only, api.head, call=call, default_status=status, replica_safe=safe)


def read_plan(
    api: ApiRequest, source: Source, query: Sequence[tuple[str, str]], settings: Settings
) -> ReadPlan:
    """The read dialect of a request over a source; an anonymous caller's exact count is bounded (counted up
    to the anonymous count limit, the planner's estimate above it, as count=estimated does)."""
    plan = parse_read(query, source, api.read_options, max_rows=settings.max_rows)
    if not api.identity.authenticated and plan.count == "exact" and settings.anonymous.count_limit:
        plan.count = "estimated"
        plan.count_limit = settings.anonymous.count_limit
    return plan


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
    """Path parameters, then the JSON body (or the query on GET), then Idempotency-Key -> arguments; the
    query parameters that name no argument are the read dialect's (of a function returning rows)."""
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
    values: dict[str, Any] = {name: RawText(value) for name, value in path_params.items()}
    _bind_body(fn, body or {}, values)
    _bind_query(fn, query_args, values)
    _bind_idempotency_key(fn, idempotency_key, values)
    _check_complete(fn, values, read_params, method)
    return Binding(fn, values, read_params)


def _bind_body(fn: Function, body: Mapping[str, Any], values: dict[str, Any]) -> None:
    for name, value in body.items():
        if fn.argument(name) is None:
            raise unknown_argument(f"api.{fn.name}", name)
        if name in values:
            raise bad_request(
                f"{name!r} is given in the path; leave it out of the body.", "duplicate_argument", field=name
            )
        values[name] = value


def _bind_query(fn: Function, query_args: Mapping[str, list[str]], values: dict[str, Any]) -> None:
    for name, items in query_args.items():
        arg = fn.argument(name)
        if arg is None:
            raise unknown_argument(f"api.{fn.name}", name)
        if name in values:
            raise bad_request(
                f"{name!r} is given in the path; leave it out of the query.", "duplicate_argument", field=name
            )
        if len(items) > 1 and not arg.type.is_array:
            raise bad_request(f"{name!r} is given {len(items)} times.", "duplicate_argument", field=name)
        values[name] = [RawText(i) for i in items] if len(items) > 1 else RawText(items[0])


def _bind_idempotency_key(fn: Function, key: str | None, values: dict[str, Any]) -> None:
    if key is None or fn.argument(IDEMPOTENCY_ARGUMENT) is None:
        return
    if IDEMPOTENCY_ARGUMENT in values and values[IDEMPOTENCY_ARGUMENT] != key:
        raise bad_request(
            "The Idempotency-Key header and the idempotency_key field differ.",
            "duplicate_argument",
            field=IDEMPOTENCY_ARGUMENT,
        )
    values[IDEMPOTENCY_ARGUMENT] = RawText(key)


def _check_complete(
    fn: Function, values: Mapping[str, Any], read_params: Sequence[tuple[str, str]], method: str
) -> None:
    """400 for a missing argument without a default, and for query parameters a call cannot read."""
    label = f"api.{fn.name}"
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
