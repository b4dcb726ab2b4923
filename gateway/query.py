"""The query stage: a Plan -> the statements of its transaction (SQL building only).

Identifiers come only from the schema cache (quoted by `ident`), values only as parameters, and every
parameter is cast to the type the schema cache gives for its column or argument. Response JSON is built by
PostgreSQL (`json_agg`); the gateway passes the text through.

A `Fragment` is SQL with the parameters of its `%s` placeholders, in text order, and for each parameter
the field it came from (so an error about `$3` can name the argument or column).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Json, Jsonb

from gateway import db
from gateway.dialect import Filter, Logic, RawText, ReadPlan
from gateway.plan import Plan
from gateway.schema_cache import Function, PgType, SchemaCache, cast

if TYPE_CHECKING:
    from gateway.catalog_cache import CatalogKey

_COMPARE = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LIKE = {"like": "like", "ilike": "ilike"}
_MATCH = {"match": "~", "imatch": "~*"}
_FTS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
_IS = {"null": "null", "not_null": "not null", "true": "true", "false": "false", "unknown": "unknown"}
# the two columns every main statement ends with (see gateway.db.Statement.response)
RESPONSE_SETTINGS = (
    ", pg_catalog.current_setting('response.status', true)"
    ", pg_catalog.current_setting('response.headers', true)"
)


@dataclass
class Fragment:
    """SQL text with its parameters (text order) and the field each parameter belongs to."""

    query: str
    params: list[Any] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)

    def __add__(self, other: Fragment | str) -> Fragment:
        if isinstance(other, Fragment):
            return Fragment(self.query + other.query, self.params + other.params, self.fields + other.fields)
        return Fragment(self.query + other, list(self.params), list(self.fields))


@functools.lru_cache(maxsize=4096)
def ident(*names: str) -> str:
    """A (qualified) identifier, every part double-quoted as PostgreSQL's quote_ident does for any name:
    `"api"."products"`. The names come from the schema cache, never from a request.

    SQL is built as text (not `psycopg.sql` objects): a request's statement is a few string joins, and the
    driver converts each distinct text once (`gateway.db.to_postgres`).
    """
    for name in names:
        if "\x00" in name:
            raise ValueError("an identifier cannot contain NUL")
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def frag(text: str) -> Fragment:
    return Fragment(text)


def join(fragments: Sequence[Fragment], separator: str) -> Fragment:
    result = Fragment("")
    for index, fragment in enumerate(fragments):
        if index:
            result = result + separator
        result = result + fragment
    return result


def value_param(value: Any, type_: PgType, schema: SchemaCache, name: str) -> Fragment:
    """A value as `%s::<type>`: text for PostgreSQL to parse (the error then names the parameter)."""
    if isinstance(value, RawText):
        return Fragment("%s" + cast(type_.plain, schema), [str(value)], [name])
    if type_.is_json:
        return Fragment("%s" + cast(type_.plain, schema), [Jsonb(value)], [name])
    if type_.composite and isinstance(value, dict):
        return Fragment(
            "pg_catalog.json_populate_record(null" + cast(type_.plain, schema) + ", %s)",
            [Json(value)],
            [name],
        )
    return Fragment("%s" + cast(type_.plain, schema), [to_text(value, type_)], [name])


def to_text(value: Any, type_: PgType | None = None) -> str | None:
    """A JSON value as the text input of a PostgreSQL type (arrays as array literals)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))  # JSON has one number type: 3.0 is the integer 3
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list) and (type_ is None or type_.is_array):
        return array_literal(value)
    return json.dumps(value, separators=(",", ":"))


def array_literal(items: Iterable[Any]) -> str:
    """A PostgreSQL array literal with every element quoted: `{"1","a,b",NULL}`."""
    parts: list[str] = []
    for item in items:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, list):
            parts.append(array_literal(item))
        else:
            text = to_text(item) or ""
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


# -- reads ---------------------------------------------------------------------------------------------


def filter_sql(item: Filter | Logic, schema: SchemaCache) -> Fragment:
    if isinstance(item, Logic):
        inner = join([filter_sql(sub, schema) for sub in item.items], f" {item.operator} ")
        expression = frag("(") + inner + ")"
        return frag("not ") + expression if item.negate else expression
    column = ident(item.column.name)
    type_ = item.column.type
    name = item.column.name
    if item.operator in _COMPARE:
        expression = Fragment(column + f" {_COMPARE[item.operator]} ") + value_param(
            RawText(str(item.value)), type_, schema, name
        )
    elif item.operator in _LIKE:
        expression = Fragment(column + f"::text {_LIKE[item.operator]} %s", [str(item.value)], [name])
    elif item.operator in _MATCH:
        expression = Fragment(column + f"::text {_MATCH[item.operator]} %s", [str(item.value)], [name])
    elif item.operator == "in":
        assert isinstance(item.value, list)
        expression = Fragment(
            column + " = any(%s" + cast(type_.plain, schema, array=True) + ")",
            [array_literal(item.value)],
            [name],
        )
    elif item.operator == "is":
        expression = Fragment(column + " is " + _IS[str(item.value)])
    else:
        function = "pg_catalog." + _FTS[item.operator]
        if item.config is not None:
            expression = Fragment(
                column + " @@ " + function + "(%s::pg_catalog.regconfig, %s)",
                [item.config, item.value],
                [name, name],
            )
        else:
            expression = Fragment(column + " @@ " + function + "(%s)", [item.value], [name])
    return frag("not (") + expression + ")" if item.negate else expression


def range_sql(item: Filter) -> Fragment:
    """The byte ranges of a pattern filter, with the leakproof operators of text_pattern_ops: PostgreSQL
    takes them into the security-barrier view and onto the index (see gateway.patterns)."""
    column = ident(item.column.name)
    parts: list[Fragment] = []
    for low, high in item.ranges:
        part = Fragment(column + " operator(pg_catalog.~>=~) %s::text", [low], [item.column.name])
        if high is not None:
            part = part + Fragment(
                " and " + column + " operator(pg_catalog.~<~) %s::text", [high], [item.column.name]
            )
        parts.append(part)
    return frag("(") + join(parts, " or ") + ")"


def where_sql(plan: ReadPlan, schema: SchemaCache) -> Fragment:
    if not plan.where:
        return frag("")
    conditions: list[Fragment] = []
    for item in plan.where:
        if isinstance(item, Filter) and item.ranges:
            conditions.append(range_sql(item))
        conditions.append(filter_sql(item, schema))
    return frag(" where ") + join(conditions, " and ")


def order_sql(plan: ReadPlan) -> str:
    if not plan.order:
        return ""
    parts: list[str] = []
    for order in plan.order:
        part = ident(order.column.name) + (" desc" if order.descending else " asc")
        if order.nulls:
            part = part + f" nulls {order.nulls}"
        parts.append(part)
    return " order by " + ", ".join(parts)


@dataclass
class ReadStatements:
    """The statements of one read: the page (body, rows in it, exact total) and an optional EXPLAIN."""

    main: Fragment
    explain: Fragment | None = None


def read_statements(source: Fragment, plan: ReadPlan, schema: SchemaCache) -> ReadStatements:
    """`select <body>, <rows>, <total> from (<page>) _t` over a source (a view or a function call). HEAD
    builds the body too: its ETag and Content-Length are the GET's."""
    columns = ", ".join(
        ident(column.name) + (" as " + ident(alias) if alias != column.name else "")
        for alias, column in plan.select
    )
    where = where_sql(plan, schema)
    page = frag("select ") + columns + " from " + source + where + order_sql(plan)
    if plan.limit is not None:
        page = page + Fragment(" limit %s", [plan.limit], ["limit"])
    if plan.offset:
        page = page + Fragment(" offset %s", [plan.offset], ["offset"])
    if plan.singular:
        body = frag("case when count(*) = 1 then (pg_catalog.json_agg(_t) -> 0)::text end")
    else:
        body = frag("coalesce(pg_catalog.json_agg(_t), '[]')::text")
    filtered = frag("select 1 from ") + source + where
    threshold = plan.count_limit
    if plan.count == "exact":
        total = frag("(select count(*) from (") + filtered + ") _c)"
    elif plan.count == "estimated":
        total = (
            frag("(select count(*) from (")
            + filtered
            + Fragment(" limit %s) _c)", [threshold + 1], ["count"])
        )
    else:
        total = frag("null::bigint")
    main = frag("select ") + body + ", count(*), " + total + RESPONSE_SETTINGS + " from (" + page + ") _t"
    explain = None
    if plan.count in ("planned", "estimated"):
        explain = frag("explain (format json) ") + filtered
    return ReadStatements(main=main, explain=explain)


# -- function calls ----------------------------------------------------------------------------------


def function_call(fn: Function, values: Mapping[str, Any], schema: SchemaCache) -> Fragment:
    """`api.fn(a => %s::bigint, b => %s::jsonb)` with named arguments, in declaration order."""
    parts: list[Fragment] = []
    for arg in fn.args:
        if arg.name not in values:
            continue
        value = values[arg.name]
        prefix = "variadic " if arg.variadic else ""
        parts.append(
            Fragment(prefix + ident(arg.name) + " => ") + value_param(value, arg.type, schema, arg.name)
        )
    return Fragment(ident("api", fn.name) + "(") + join(parts, ", ") + ")"


def call_statement(fn: Function, call: Fragment) -> Fragment:
    """The statement for a function whose result is not read with the dialect: one JSON text value, and
    the response settings the call left (read after it: from a FROM item, or an aggregate over one)."""
    if fn.result == "void":
        return frag("select null::text") + RESPONSE_SETTINGS + " from " + call + " as _t"
    if fn.returns_set:
        return (
            frag("select coalesce(pg_catalog.json_agg(_t), '[]')::text")
            + RESPONSE_SETTINGS
            + " from "
            + call
            + " as _t"
        )
    if fn.returns.base == "jsonb" or fn.returns.base == "json":
        value = frag("select (") + call + ")::text"
    else:
        value = frag("select pg_catalog.to_json(") + call + ")::text"
    # offset 0: the subquery (the call) is not pulled up into the outer select, so it runs first
    return frag("select _r.v") + RESPONSE_SETTINGS + " from (" + value + " as v offset 0) as _r"


# -- the statements of a plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """The statements of a plan, in the order the transaction runs them, with the plan they answer."""

    plan: Plan
    statements: list[db.Statement]
    # an anonymous catalog read's key in the catalog cache (gateway.catalog_cache), set when it is built
    catalog: CatalogKey | None = None

    @property
    def size(self) -> int:
        """About the bytes the statements hold (their texts and parameters), for the cache of reads."""
        return sum(
            len(str(statement.query)) + sum(len(str(value)) for value in statement.params)
            for statement in self.statements
        )


def build_query(plan: Plan, schema: SchemaCache) -> Query:
    """A read's page (and its EXPLAIN for a planned count), or a call's one statement."""
    if plan.read is not None:
        return Query(plan, read_query(read_source(plan, schema), plan.read, schema))
    assert plan.call is not None
    fn = plan.call.function
    call = function_call(fn, plan.call.values, schema)
    return Query(plan, [_statement(call_statement(fn, call), response=True)])


def read_source(plan: Plan, schema: SchemaCache) -> Fragment:
    """What a read selects from: the view, or the function call."""
    if plan.view is not None:
        return Fragment(ident("api", plan.view.name))
    assert plan.call is not None
    return function_call(plan.call.function, plan.call.values, schema) + " as _src"


def read_query(source: Fragment, plan: ReadPlan, schema: SchemaCache) -> list[db.Statement]:
    statements = read_statements(source, plan, schema)
    result = [_statement(statements.main, response=True)]
    if statements.explain is not None:
        result.append(_statement(statements.explain))
    return result


def _statement(fragment: Fragment, *, response: bool = False) -> db.Statement:
    return db.Statement(fragment.query, fragment.params, fragment.fields, raw_text=True, response=response)
