"""The schema cache: what the `api` schema offers (views, functions, their arguments, columns, comments and
declared routes), read from the system catalogs at startup and again on `NOTIFY commercecore_schema`.

The cache is immutable; a reload builds a new one and swaps a single reference, so a request in flight
keeps the cache it started with. Privileges are not cached: the database refuses what a role may not do.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from gateway import background
from gateway import db as gwdb

log = logging.getLogger("commercecore.schema_cache")

SCHEMA = "api"
NOTIFY_CHANNEL = "commercecore_schema"
ROUTE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_ROUTE_LINE = re.compile(r"^\s*@route\s+(\S+)\s+(\S+)\s*$")
# `@search name, description`, `@pattern name, sku`, `@order id, price_minor`: which columns a view (or a
# function returning rows) offers for full-text filters, pattern filters and order=
_READ_LINE = re.compile(r"^\s*@(search|pattern|order)\s+(.*?)\s*$")
READ_DECLARATIONS = ("search", "pattern", "order")
_LITERAL_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PARAM_SEGMENT = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# paths the gateway serves itself: a declared route may not shadow them
RESERVED_PREFIXES = ("/rpc/", "/auth/", "/docs", "/openapi.json", "/health", "/metrics", "/me/password")


@dataclass(frozen=True)
class PgType:
    """A type as the system catalog names it (`format_type`), with what the gateway needs to know about it."""

    name: str  # format_type(oid, typmod): "bigint", "character varying(20)", "text[]", "api.status"
    plain: str  # without the type modifier, for casts: "character varying" (a cast to varchar(20) truncates)
    base: str  # the domain's base type, else the same as name
    category: str  # pg_type.typcategory: N numeric, S string, B boolean, D date/time, A array, U user ...
    element: str | None = None  # element type of an array
    enum: tuple[str, ...] = ()
    composite: bool = False

    @property
    def is_json(self) -> bool:
        return self.base in ("json", "jsonb")

    @property
    def is_array(self) -> bool:
        return self.element is not None


@dataclass(frozen=True)
class Column:
    name: str
    type: PgType
    nullable: bool = True
    description: str = ""


@dataclass(frozen=True)
class Argument:
    name: str
    type: PgType
    has_default: bool
    variadic: bool = False


@dataclass(frozen=True)
class RouteDecl:
    """`@route METHOD /path/{param}` from a comment."""

    method: str
    template: str
    params: tuple[str, ...]

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.strip("/").split("/")) if self.template != "/" else ()


@dataclass(frozen=True)
class ReadRules:
    """The columns a read source declares for the costly parts of the dialect (see _READ_LINE): anything
    else is refused with 400, so a client cannot make the database scan or sort what nobody indexed."""

    search: tuple[str, ...] = ()  # fts plfts phfts wfts
    pattern: tuple[str, ...] = ()  # like ilike match imatch, anchored (see gateway.patterns)
    order: tuple[str, ...] = ()  # order=

    def allowed(self, kind: str) -> tuple[str, ...]:
        found: tuple[str, ...] = getattr(self, kind)
        return found


@dataclass(frozen=True)
class View:
    name: str
    columns: Mapping[str, Column]
    description: str = ""
    routes: tuple[RouteDecl, ...] = ()
    rules: ReadRules = ReadRules()


@dataclass(frozen=True)
class Function:
    name: str
    signature: str  # regprocedure text: "api.create_order(jsonb,bigint)"
    args: tuple[Argument, ...]
    returns: PgType
    returns_set: bool
    # rows: a composite/TABLE result whose columns are known; scalar: one value; void: nothing
    result: str
    columns: Mapping[str, Column]
    volatility: str  # "i" immutable, "s" stable, "v" volatile
    description: str = ""
    routes: tuple[RouteDecl, ...] = ()
    rules: ReadRules = ReadRules()

    @property
    def read_only(self) -> bool:
        return self.volatility in ("i", "s")

    def argument(self, name: str) -> Argument | None:
        for arg in self.args:
            if arg.name == name:
                return arg
        return None


@dataclass(frozen=True)
class SchemaCache:
    """One consistent snapshot of the `api` schema and the request roles' settings."""

    views: Mapping[str, View] = field(default_factory=dict)
    functions: Mapping[str, tuple[Function, ...]] = field(default_factory=dict)
    role_settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    description: str = ""
    warnings: tuple[str, ...] = ()
    type_names: frozenset[str] = frozenset()


# -- introspection -----------------------------------------------------------------------------------

_TYPE_JSON = """
  json_build_object(
    'name', pg_catalog.format_type(t.oid, {typmod}),
    'plain', pg_catalog.format_type(t.oid, null),
    'base', pg_catalog.format_type(coalesce(nullif(t.typbasetype, 0), t.oid), null),
    'category', t.typcategory,
    'element', case when t.typcategory = 'A' then pg_catalog.format_type(t.typelem, null) end,
    'composite', t.typtype = 'c',
    'enum', (select json_agg(e.enumlabel order by e.enumsortorder) from pg_catalog.pg_enum as e
             where e.enumtypid = coalesce(nullif(t.typbasetype, 0), t.oid))
  )
"""

VIEWS_QUERY = f"""
select c.relname,
  coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), ''),
  json_agg(json_build_object(
    'name', a.attname,
    'type', {_TYPE_JSON.format(typmod="a.atttypmod")},
    'nullable', not a.attnotnull,
    'description', coalesce(pg_catalog.col_description(c.oid, a.attnum), '')
  ) order by a.attnum)
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join pg_catalog.pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_catalog.pg_type as t on t.oid = a.atttypid
where n.nspname = %s and c.relkind in ('v', 'm', 'r', 'p', 'f')
group by c.oid, c.relname
order by c.relname
"""

FUNCTIONS_QUERY = f"""
select p.proname,
  p.oid::pg_catalog.regprocedure::text,
  p.provolatile::text,
  p.proretset,
  p.provariadic <> 0,
  p.pronargs,
  p.pronargdefaults,
  {_TYPE_JSON.format(typmod="null")},
  coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), ''),
  coalesce((
    select json_agg(json_build_object(
      'name', coalesce(a.name, ''),
      'mode', coalesce(a.mode::text, 'i'),
      'type', (select {_TYPE_JSON.format(typmod="null")} from pg_catalog.pg_type as t where t.oid = a.type)
    ) order by a.ord)
    from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]), p.proargnames, p.proargmodes)
      with ordinality as a (type, name, mode, ord)
  ), '[]'),
  coalesce((
    select json_agg(json_build_object(
      'name', at.attname,
      'type', (select {_TYPE_JSON.format(typmod="at.atttypmod")} from pg_catalog.pg_type as t
               where t.oid = at.atttypid)
    ) order by at.attnum)
    from pg_catalog.pg_attribute as at
    where at.attrelid = t.typrelid and t.typrelid <> 0 and at.attnum > 0 and not at.attisdropped
  ), '[]')
from pg_catalog.pg_proc as p
join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
join pg_catalog.pg_type as t on t.oid = p.prorettype
where n.nspname = %s and p.prokind = 'f'
order by p.proname, p.oid
"""

SCHEMA_COMMENT_QUERY = """
select coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), '')
from pg_catalog.pg_namespace as n where n.nspname = %s
"""


def _pg_type(data: Mapping[str, Any]) -> PgType:
    return PgType(
        name=data["name"],
        plain=data["plain"],
        base=data["base"],
        category=data["category"],
        element=data.get("element"),
        enum=tuple(data.get("enum") or ()),
        composite=bool(data.get("composite")),
    )


def parse_comment(comment: str) -> tuple[str, list[tuple[str, str]]]:
    """A comment -> (its text without the route and read lines, [(method, path) of each `@route` line])."""
    text: list[str] = []
    routes: list[tuple[str, str]] = []
    for line in comment.splitlines():
        match = _ROUTE_LINE.match(line)
        if match:
            routes.append((match.group(1).upper(), match.group(2)))
        elif not _READ_LINE.match(line):
            text.append(line)
    return "\n".join(text).strip(), routes


def parse_rules(
    kind: str, name: str, comment: str, columns: Mapping[str, Column], warnings: list[str]
) -> ReadRules:
    """The `@search`, `@pattern` and `@order` lines of a comment; a column the source does not have is
    left out with a warning."""
    found: dict[str, list[str]] = {key: [] for key in READ_DECLARATIONS}
    for line in comment.splitlines():
        match = _READ_LINE.match(line)
        if not match:
            continue
        for column in (part.strip() for part in match.group(2).split(",")):
            if column not in columns:
                warnings.append(f"{kind} api.{name}: @{match.group(1)} {column!r} ignored: no such column")
            elif column not in found[match.group(1)]:
                found[match.group(1)].append(column)
    return ReadRules(**{key: tuple(value) for key, value in found.items()})


def parse_route(method: str, path: str) -> RouteDecl:
    """Validates one declared route; ValueError says what is wrong with it."""
    if method not in ROUTE_METHODS:
        raise ValueError(f"method {method} is not one of {', '.join(ROUTE_METHODS)}")
    if not path.startswith("/") or "//" in path or (path != "/" and path.endswith("/")):
        raise ValueError(f"path {path!r} must start with / and have no empty segment")
    if path == "/" or any(path == p.rstrip("/") or path.startswith(p) for p in RESERVED_PREFIXES):
        raise ValueError(f"path {path!r} is served by the gateway itself")
    params: list[str] = []
    for segment in path.strip("/").split("/"):
        param = _PARAM_SEGMENT.match(segment)
        if param:
            if param.group(1) in params:
                raise ValueError(f"path {path!r} names {{{param.group(1)}}} twice")
            params.append(param.group(1))
        elif not _LITERAL_SEGMENT.match(segment):
            raise ValueError(f"path segment {segment!r} is neither a literal nor a {{parameter}}")
    return RouteDecl(method=method, template=path, params=tuple(params))


def _routes_of(
    kind: str, name: str, declared: list[tuple[str, str]], names: Mapping[str, Any], warnings: list[str]
) -> tuple[RouteDecl, ...]:
    routes: list[RouteDecl] = []
    for method, path in declared:
        try:
            route = parse_route(method, path)
        except ValueError as exc:
            warnings.append(f"{kind} api.{name}: @route {method} {path} ignored: {exc}")
            continue
        missing = [p for p in route.params if p not in names]
        if missing:
            warnings.append(
                f"{kind} api.{name}: @route {method} {path} ignored:"
                f" no argument or column named {', '.join(missing)}"
            )
            continue
        routes.append(route)
    return tuple(routes)


def _split_arguments(raw_args: list[dict[str, Any]]) -> tuple[list[tuple[str, PgType]], list[Column], bool]:
    """A function's arguments as the catalog lists them -> (its inputs, its output columns, whether it
    returns a TABLE)."""
    inputs: list[tuple[str, PgType]] = []
    outputs: list[Column] = []
    table_result = False
    for arg in raw_args:
        mode = arg["mode"]
        if mode in ("i", "b", "v"):
            inputs.append((arg["name"], _pg_type(arg["type"])))
        if mode in ("o", "b", "t"):
            outputs.append(Column(name=arg["name"], type=_pg_type(arg["type"])))
            table_result = table_result or mode == "t"
    return inputs, outputs, table_result


def _result_columns(
    returns: PgType, outputs: list[Column], table_result: bool, ret_cols: list[dict[str, Any]]
) -> tuple[str, dict[str, Column]]:
    """(rows, scalar or void; the columns of rows): OUT or TABLE columns, or those of a composite type."""
    columns: dict[str, Column] = {}
    if table_result or len(outputs) > 1:
        columns = {c.name: c for c in outputs}
    elif returns.composite:
        columns = {c["name"]: Column(name=c["name"], type=_pg_type(c["type"])) for c in ret_cols}
    if returns.name == "void":
        return "void", columns
    return ("rows" if columns else "scalar"), columns


def _function_routes(
    name: str, signature: str, volatility: str, comment: str, args: tuple[Argument, ...], warnings: list[str]
) -> tuple[RouteDecl, ...]:
    """The routes a function's comment declares; GET only for a STABLE or IMMUTABLE one."""
    _description, declared = parse_comment(comment)
    checked: list[RouteDecl] = []
    for route in _routes_of("function", name, declared, {a.name: a for a in args}, warnings):
        if route.method == "GET" and volatility == "v":
            warnings.append(
                f"function {signature}: @route GET {route.template} ignored:"
                " GET serves only STABLE or IMMUTABLE functions"
            )
            continue
        checked.append(route)
    return tuple(checked)


def build_function(row: tuple[Any, ...], warnings: list[str]) -> Function | None:
    """A row of FUNCTIONS_QUERY -> a Function; None (with a warning) for one HTTP cannot call."""
    (
        name,
        signature,
        volatility,
        returns_set,
        variadic,
        _nargs,
        ndefaults,
        ret,
        comment,
        raw_args,
        ret_cols,
    ) = row
    inputs, outputs, table_result = _split_arguments(raw_args)
    if any(not arg_name for arg_name, _ in inputs):
        warnings.append(f"function {signature} ignored: every argument needs a name to be called over HTTP")
        return None
    args = tuple(
        Argument(
            name=arg_name,
            type=arg_type,
            has_default=index >= len(inputs) - ndefaults,
            variadic=variadic and index == len(inputs) - 1,
        )
        for index, (arg_name, arg_type) in enumerate(inputs)
    )
    returns = _pg_type(ret)
    result, columns = _result_columns(returns, outputs, table_result, ret_cols)
    return Function(
        name=name,
        signature=signature,
        args=args,
        returns=returns,
        returns_set=bool(returns_set),
        result=result,
        columns=columns,
        volatility=volatility,
        description=parse_comment(comment)[0],
        routes=_function_routes(name, signature, volatility, comment, args, warnings),
        rules=parse_rules("function", name, comment, columns, warnings),
    )


def build_view(row: tuple[Any, ...], warnings: list[str]) -> View:
    name, comment, raw_columns = row
    columns = {
        c["name"]: Column(
            name=c["name"], type=_pg_type(c["type"]), nullable=c["nullable"], description=c["description"]
        )
        for c in raw_columns
    }
    description, declared = parse_comment(comment)
    routes = _routes_of("view", name, declared, columns, warnings)
    checked: list[RouteDecl] = []
    for route in routes:
        if route.method != "GET":
            warnings.append(
                f"view api.{name}: @route {route.method} {route.template} ignored: views serve GET only"
            )
            continue
        checked.append(route)
    return View(
        name=name,
        columns=columns,
        description=description,
        routes=tuple(checked),
        rules=parse_rules("view", name, comment, columns, warnings),
    )


def _collect_types(
    views: Mapping[str, View], functions: Mapping[str, tuple[Function, ...]]
) -> frozenset[str]:
    names: set[str] = set()
    for view in views.values():
        names.update(c.type.plain for c in view.columns.values())
    for overloads in functions.values():
        for fn in overloads:
            names.update(a.type.plain for a in fn.args)
            names.update(c.type.plain for c in fn.columns.values())
    return frozenset(names)


async def load(conn: psycopg.AsyncConnection[Any], schema: str = SCHEMA) -> SchemaCache:
    """Reads the schema cache in one read-only transaction (a consistent snapshot)."""
    warnings: list[str] = []
    async with conn.transaction():
        await conn.execute("set transaction isolation level repeatable read, read only")
        view_rows = await (await conn.execute(VIEWS_QUERY, [schema])).fetchall()
        function_rows = await (await conn.execute(FUNCTIONS_QUERY, [schema])).fetchall()
        comment_row = await (await conn.execute(SCHEMA_COMMENT_QUERY, [schema])).fetchone()
        role_rows = await (await conn.execute(gwdb.ROLE_SETTINGS_QUERY)).fetchall()
    views = {row[0]: build_view(row, warnings) for row in view_rows}
    grouped: dict[str, list[Function]] = {}
    for row in function_rows:
        fn = build_function(row, warnings)
        if fn is not None:
            grouped.setdefault(fn.name, []).append(fn)
    functions = {name: tuple(fns) for name, fns in grouped.items()}
    for name in functions:
        if name in views:
            warnings.append(f"api.{name} is both a view and a function: /{name} serves the view")
    return SchemaCache(
        views=views,
        functions=functions,
        role_settings=gwdb.parse_role_settings(role_rows),
        description=comment_row[0] if comment_row else "",
        warnings=tuple(warnings),
        type_names=_collect_types(views, functions),
    )


def cast(type_name: str, schema: SchemaCache, *, array: bool = False) -> str:
    """`::<type>` (or `::<type>[]`) for a type name the schema cache holds, never a name from a request."""
    if type_name not in schema.type_names:
        raise ValueError(f"{type_name!r} is not a type of the schema cache")
    return "::" + type_name + ("[]" if array else "")


# -- reloads ---------------------------------------------------------------------------------------


class SchemaListener:
    """LISTEN on NOTIFY_CHANNEL with a dedicated connection; calls `reload` on every notification.

    After a lost connection it reconnects with backoff and reloads once (a notification may have been
    missed while it was away).
    """

    def __init__(
        self, conninfo: str, reload: Callable[[], Awaitable[object]], *, channel: str = NOTIFY_CHANNEL
    ) -> None:
        self.conninfo = conninfo
        self.reload = reload
        self.channel = channel
        self.task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="schema-listener")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            await background.stop(task)

    async def _run(self) -> None:
        delay = 0.5
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, application_name="commercecore-gateway-listener"
                ) as conn:
                    await conn.execute(sql.SQL("listen {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    delay = 0.5
                    if not first:
                        await self._reload("reconnected")
                    first = False
                    async for notify in conn.notifies():
                        await self._reload(notify.payload or "notify")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection, the database restarting: retry with backoff
                self.listening.clear()
                first = False
                log.warning(
                    "schema listener: %s; retrying in %.1f s", str(exc).strip() or type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _reload(self, reason: str) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("schema cache reload (%s) failed; the previous cache stays in use", reason)
        else:
            log.info("schema cache reloaded (%s)", reason)
