"""The PostgREST read dialect -> SQL, and function calls -> SQL.

Identifiers come only from the schema cache (quoted by `ident`), values only as parameters, and every
parameter is cast to the type the catalog gives for its column or argument. Response JSON is built by
PostgreSQL (`json_agg`); the gateway passes the text through.

A `Fragment` is SQL with the parameters of its `%s` placeholders, in text order, and for each parameter
the field it came from (so an error about `$3` can name the argument or column).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Json, Jsonb

from gateway import patterns
from gateway.catalog import Catalog, Column, Function, PgType, ReadRules, cast
from gateway.errors import ApiError, bad_request
from gateway.settings import RequestLimits

READ_KEYWORDS = frozenset({"select", "order", "limit", "offset", "or", "and", "not.or", "not.and"})
_COMPARE = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LIKE = {"like": "like", "ilike": "ilike"}
_MATCH = {"match": "~", "imatch": "~*"}
_PATTERN_TYPES = frozenset({"text", "character varying"})
_FTS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
_IS = {"null": "null", "not_null": "not null", "true": "true", "false": "false", "unknown": "unknown"}
_FTS_OP = re.compile(r"^(fts|plfts|phfts|wfts)(?:\(([^()]*)\))?$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RANGE = re.compile(r"^(?:items=)?\s*(\d{1,18})-(\d{0,18})\s*$", re.IGNORECASE)
COUNT_METHODS = ("exact", "planned", "estimated")
OBJECT_MEDIA_TYPE = "application/vnd.pgrst.object+json"
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


class RawText(str):
    """A value that arrived as text (query string, path, header): PostgreSQL parses it, JSON types too."""

    __slots__ = ()


def value_param(value: Any, type_: PgType, catalog: Catalog, name: str) -> Fragment:
    """A value as `%s::<type>`: text for PostgreSQL to parse (the error then names the parameter)."""
    if isinstance(value, RawText):
        return Fragment("%s" + cast(type_.plain, catalog), [str(value)], [name])
    if type_.is_json:
        return Fragment("%s" + cast(type_.plain, catalog), [Jsonb(value)], [name])
    if type_.composite and isinstance(value, dict):
        return Fragment(
            "pg_catalog.json_populate_record(null" + cast(type_.plain, catalog) + ", %s)",
            [Json(value)],
            [name],
        )
    return Fragment("%s" + cast(type_.plain, catalog), [to_text(value, type_)], [name])


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


# -- the read dialect: select, filters, order, limit/offset, Range, Prefer: count ------------------------


@dataclass(frozen=True)
class Source:
    """What a read may touch: the columns of a view or function, what it declares for full-text, pattern
    and order, and the request limits."""

    name: str  # "api.products"
    columns: Mapping[str, Column]
    rules: ReadRules = field(default_factory=ReadRules)
    limits: RequestLimits = field(default_factory=RequestLimits)


@dataclass(frozen=True)
class Filter:
    column: Column
    operator: str
    value: str | list[str] | None
    negate: bool = False
    config: str | None = None
    # a pattern filter: the byte ranges that hold every value it can match (see gateway.patterns)
    ranges: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Logic:
    """`or=(...)` / `and=(...)`: a tree of filters."""

    operator: str  # "and" | "or"
    items: tuple[Filter | Logic, ...]
    negate: bool = False


@dataclass(frozen=True)
class Order:
    column: Column
    descending: bool = False
    nulls: str | None = None  # "first" | "last"


@dataclass
class ReadPlan:
    select: list[tuple[str, Column]]
    where: list[Filter | Logic] = field(default_factory=list)
    order: list[Order] = field(default_factory=list)
    offset: int = 0
    limit: int | None = None
    count: str | None = None
    singular: bool = False
    range_requested: bool = False
    # count=estimated (and count=exact of an anonymous caller): rows counted before the planner's estimate
    count_limit: int = 1000


def _column(source: Source, name: str) -> Column:
    column = source.columns.get(name)
    if column is None:
        raise ApiError(
            400,
            "42703",
            f"{source.name} has no column {name!r}.",
            details={"code": "unknown_column", "field": name},
            hint=f"Columns: {', '.join(source.columns)}." if source.columns else None,
        )
    return column


_DECLARED = {
    "search": ("full-text filters", "@search"),
    "pattern": ("pattern filters", "@pattern"),
    "order": ("order=", "@order"),
}


def check_declared(source: Source, kind: str, column: Column, operator: str) -> None:
    """400 naming the allowed columns unless the source declares `column` for this kind of use."""
    allowed = source.rules.allowed(kind)
    if column.name in allowed:
        return
    what, line = _DECLARED[kind]
    raise ApiError(
        400,
        "PGRST100",
        f"{source.name} offers {what} on {', '.join(allowed) if allowed else 'no column'};"
        f" not on {column.name!r}.",
        details={
            "code": "not_declared",
            "field": column.name,
            "operator": operator,
            "allowed": list(allowed),
        },
        hint=f"The source declares them with an {line} line in its comment; /openapi.json lists them.",
    )


def too_many(what: str, code: str, limit: int, given: int, field: str | None = None) -> ApiError:
    details: dict[str, Any] = {"code": code, "limit": limit, "given": given}
    if field is not None:
        details["field"] = field
    return ApiError(400, "PGRST100", f"At most {limit} {what} per request; {given} given.", details=details)


def parse_select(value: str, source: Source) -> list[tuple[str, Column]]:
    columns = source.columns
    if value.strip() in ("", "*"):
        return [(name, col) for name, col in columns.items()]
    items: list[tuple[str, Column]] = []
    limit = source.limits.max_select_columns
    for raw in value.split(","):
        if len(items) > limit:
            break
        item = raw.strip()
        if item == "*":
            items.extend(columns.items())
            continue
        alias, _, name = item.rpartition(":")
        if "(" in item or "::" in item or "->" in item:
            raise bad_request(
                f"select={item!r}: only column names and `alias:column` are supported.",
                "unsupported_select",
                field=item,
            )
        if alias and not _ALIAS.match(alias):
            raise bad_request(f"select alias {alias!r} is not a plain name.", "invalid_alias", field=alias)
        column = _column(source, name)
        items.append((alias or name, column))
    if len(items) > limit:
        given = value.count(",") + 1
        raise too_many("select= columns", "too_many_columns", limit, max(given, len(items)), "select")
    return items


def _parse_list(text: str) -> list[str]:
    """`(1,"a,b",c)` -> ["1", "a,b", "c"] (PostgREST's list syntax: double quotes, backslash escapes)."""
    if not (text.startswith("(") and text.endswith(")")):
        raise bad_request("in. needs a parenthesised list: in.(1,2,3).", "invalid_filter")
    body = text[1:-1]
    items: list[str] = []
    if body == "":
        return items
    current: list[str] = []
    quoted = False
    was_quoted = False
    index = 0
    while index < len(body):
        char = body[index]
        if quoted:
            if char == "\\" and index + 1 < len(body):
                current.append(body[index + 1])
                index += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = True
            was_quoted = True
        elif char == ",":
            items.append("".join(current) if was_quoted else "".join(current).strip())
            current, was_quoted = [], False
        else:
            current.append(char)
        index += 1
    if quoted:
        raise bad_request("in. list has an unterminated double quote.", "invalid_filter")
    items.append("".join(current) if was_quoted else "".join(current).strip())
    return items


def _unquote(value: str) -> str:
    """`"a,b"` -> `a,b`: inside or=(...) a value with reserved characters is double-quoted."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _pattern_filter(source: Source, column: Column, operator: str, value: str, negate: bool) -> Filter:
    """like/ilike/match/imatch on a declared column, anchored at the start so that an index serves it."""
    check_declared(source, "pattern", column, operator)
    if operator in _LIKE:
        value = value.replace("*", "%")
        prefix = patterns.like_prefix(value)
        example = f"{column.name}={operator}.abc*"
    else:
        prefix = patterns.regex_prefix(value)
        example = f"{column.name}={operator}.^abc"
    ranges = patterns.ranges(prefix, ignore_case=operator in ("ilike", "imatch"))
    if not ranges:
        raise ApiError(
            400,
            "PGRST100",
            f"The pattern of {column.name}={operator} must start with the characters the values start"
            f" with, e.g. {example}.",
            details={"code": "pattern_not_anchored", "field": column.name, "operator": operator},
            hint="For words anywhere in a text use full-text search (fts, or /rpc/search_products).",
        )
    indexed = column.type.base in _PATTERN_TYPES and not negate
    return Filter(column, operator, value, negate, ranges=tuple(ranges) if indexed else ())


def parse_filter(source: Source, column: Column, expression: str, *, quoted: bool = False) -> Filter:
    """`[not.]operator.value` for one column (`quoted`: a double-quoted value is unquoted, as in or=())."""
    negate = False
    operator, dot, value = expression.partition(".")
    if operator == "not":
        negate = True
        operator, dot, value = value.partition(".")
    if quoted and operator != "in":
        value = _unquote(value)
    if not dot:
        raise bad_request(
            f"Filter {column.name}={expression!r} needs an operator: {column.name}=eq.value.",
            "invalid_filter",
            field=column.name,
        )
    if operator in _COMPARE:
        return Filter(column, operator, value, negate)
    if operator in _LIKE or operator in _MATCH:
        return _pattern_filter(source, column, operator, value, negate)
    if operator == "in":
        values = _parse_list(value)
        if len(values) > source.limits.max_in_values:
            raise too_many(
                "in. values", "too_many_values", source.limits.max_in_values, len(values), column.name
            )
        return Filter(column, operator, values, negate)
    if operator == "is":
        if value.lower() not in _IS:
            raise bad_request(
                f"is.{value} is not one of is.null, is.not_null, is.true, is.false, is.unknown.",
                "invalid_filter",
                field=column.name,
            )
        return Filter(column, operator, value.lower(), negate)
    fts = _FTS_OP.match(operator)
    if fts:
        check_declared(source, "search", column, fts.group(1))
        return Filter(column, fts.group(1), value, negate, config=fts.group(2) or None)
    raise bad_request(
        f"Unknown filter operator {operator!r} on {column.name}.",
        "unknown_operator",
        field=column.name,
        hint="eq neq gt gte lt lte like ilike match imatch in is fts plfts phfts wfts, each optionally"
        " after not.",
    )


def _split_top(text: str) -> list[str]:
    """Splits `a.eq.1,and(b.gt.2,c.lt.3),d.in.(1,2)` on the commas outside parentheses and quotes."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if quoted:
            if char == "\\" and index + 1 < len(text):
                current.append(char + text[index + 1])
                index += 2
                continue
            if char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise bad_request("Unbalanced parentheses in a logic filter.", "invalid_filter")
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    if depth != 0 or quoted:
        raise bad_request("Unbalanced parentheses or quotes in a logic filter.", "invalid_filter")
    parts.append("".join(current))
    return parts


def parse_logic(key: str, value: str, source: Source, depth: int = 1) -> Logic:
    """`or=(a.eq.1,b.gt.2)`, `and=(...)`, nested, with `not.` on either (`depth`: this one's level)."""
    limit = source.limits.max_logic_depth
    if depth > limit:
        raise ApiError(
            400,
            "PGRST100",
            f"Logic filters (or=, and=) nest at most {limit} levels.",
            details={"code": "too_deep", "limit": limit, "field": key},
        )
    negate = key.startswith("not.")
    operator = key[4:] if negate else key
    if not (value.startswith("(") and value.endswith(")")):
        raise bad_request(f"{key}= needs a parenthesised list: {key}=(a.eq.1,b.eq.2).", "invalid_filter")
    items: list[Filter | Logic] = []
    for part in _split_top(value[1:-1]):
        part = part.strip()
        nested = re.match(r"^((?:not\.)?(?:or|and))(\(.*\))$", part, re.DOTALL)
        if nested:
            items.append(parse_logic(nested.group(1), nested.group(2), source, depth + 1))
            continue
        name, dot, expression = part.partition(".")
        if not dot:
            raise bad_request(f"{part!r} in {key}= is not column.operator.value.", "invalid_filter")
        items.append(parse_filter(source, _column(source, name), expression, quoted=True))
    if not items:
        raise bad_request(f"{key}=() is empty.", "invalid_filter")
    return Logic(operator, tuple(items), negate)


def filter_count(item: Filter | Logic) -> int:
    """The filters of a condition: one, or those of a logic tree."""
    if isinstance(item, Filter):
        return 1
    return sum(filter_count(sub) for sub in item.items)


def parse_order(value: str, source: Source) -> list[Order]:
    orders: list[Order] = []
    for raw in value.split(","):
        parts = raw.strip().split(".")
        column = _column(source, parts[0])
        check_declared(source, "order", column, "order")
        descending = False
        nulls: str | None = None
        for modifier in parts[1:]:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls = modifier[5:]
            else:
                raise bad_request(
                    f"order={raw!r}: {modifier!r} is not asc, desc, nullsfirst or nullslast.",
                    "invalid_order",
                    field=parts[0],
                )
        orders.append(Order(column, descending, nulls))
    return orders


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise bad_request(f"{name}={value!r} is not a non-negative integer.", "invalid_" + name, field=name)
    return int(value)


def parse_prefer(headers: Mapping[str, str]) -> dict[str, str]:
    """`Prefer: count=exact, return=representation` -> {"count": "exact", "return": "representation"}."""
    prefs: dict[str, str] = {}
    for part in headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key:
            prefs[key.strip().lower()] = value.strip().lower()
    return prefs


def wants_object(headers: Mapping[str, str]) -> bool:
    return OBJECT_MEDIA_TYPE in headers.get("accept", "")


def parse_read(
    params: Sequence[tuple[str, str]],
    source: Source,
    headers: Mapping[str, str],
    *,
    max_rows: int,
) -> ReadPlan:
    """The query string and headers of a read -> a ReadPlan; 400 naming what is wrong, 416 for a bad Range."""
    plan = ReadPlan(select=list(source.columns.items()), count_limit=max_rows or 1000)
    limit: int | None = None
    offset = 0
    seen: set[str] = set()
    for key, value in params:
        if key in ("select", "order", "limit", "offset"):
            if key in seen:
                raise bad_request(f"{key} is given twice.", "duplicate_parameter", field=key)
            seen.add(key)
        if key == "select":
            plan.select = parse_select(value, source)
        elif key == "order":
            plan.order = parse_order(value, source)
        elif key == "limit":
            limit = _non_negative("limit", value)
        elif key == "offset":
            offset = _non_negative("offset", value)
        elif key in ("or", "and", "not.or", "not.and"):
            plan.where.append(parse_logic(key, value, source))
        else:
            plan.where.append(parse_filter(source, _column(source, key), value))
    filters = sum(filter_count(item) for item in plan.where)
    if filters > source.limits.max_filters:
        raise too_many("filters", "too_many_filters", source.limits.max_filters, filters)

    _page(plan, headers, offset, limit, max_rows)
    count = parse_prefer(headers).get("count")
    if count in COUNT_METHODS:
        plan.count = count
    plan.singular = wants_object(headers)
    return plan


def _page(plan: ReadPlan, headers: Mapping[str, str], offset: int, limit: int | None, max_rows: int) -> None:
    """The page of a read: offset and limit, narrowed by a Range header, capped at max_rows."""
    lower, upper = offset, (offset + limit - 1 if limit is not None else None)
    range_header = headers.get("range")
    if range_header is not None and "=" in range_header and not range_header.lower().startswith("items="):
        range_header = None  # a range unit other than items (bytes=...): ignored, as RFC 9110 says
    if range_header is not None and headers.get("range-unit", "items").lower() == "items":
        match = _RANGE.match(range_header)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ApiError(
                416,
                "PGRST103",
                f"Range {range_header!r} is not satisfiable: use first-last, e.g. Range: 0-9.",
                details={"code": "invalid_range"},
                headers={"Content-Range": "*/*"},
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else None
        plan.range_requested = True
        lower = max(lower, first)
        if last is not None:
            upper = last if upper is None else min(upper, last)
    plan.offset = lower
    plan.limit = None if upper is None else max(upper - lower + 1, 0)
    if max_rows and (plan.limit is None or plan.limit > max_rows):
        plan.limit = max_rows
    plan.range_requested = plan.range_requested or limit is not None or offset > 0


def filter_sql(item: Filter | Logic, catalog: Catalog) -> Fragment:
    if isinstance(item, Logic):
        inner = join([filter_sql(sub, catalog) for sub in item.items], f" {item.operator} ")
        expression = frag("(") + inner + ")"
        return frag("not ") + expression if item.negate else expression
    column = ident(item.column.name)
    type_ = item.column.type
    name = item.column.name
    if item.operator in _COMPARE:
        expression = Fragment(column + f" {_COMPARE[item.operator]} ") + value_param(
            RawText(str(item.value)), type_, catalog, name
        )
    elif item.operator in _LIKE:
        expression = Fragment(column + f"::text {_LIKE[item.operator]} %s", [str(item.value)], [name])
    elif item.operator in _MATCH:
        expression = Fragment(column + f"::text {_MATCH[item.operator]} %s", [str(item.value)], [name])
    elif item.operator == "in":
        assert isinstance(item.value, list)
        expression = Fragment(
            column + " = any(%s" + cast(type_.plain, catalog, array=True) + ")",
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


def where_sql(plan: ReadPlan, catalog: Catalog) -> Fragment:
    if not plan.where:
        return frag("")
    conditions: list[Fragment] = []
    for item in plan.where:
        if isinstance(item, Filter) and item.ranges:
            conditions.append(range_sql(item))
        conditions.append(filter_sql(item, catalog))
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


def read_statements(source: Fragment, plan: ReadPlan, catalog: Catalog, *, head: bool) -> ReadStatements:
    """`select <body>, <rows>, <total> from (<page>) _t` over a source (a view or a function call)."""
    columns = ", ".join(
        ident(column.name) + (" as " + ident(alias) if alias != column.name else "")
        for alias, column in plan.select
    )
    where = where_sql(plan, catalog)
    page = frag("select ") + columns + " from " + source + where + order_sql(plan)
    if plan.limit is not None:
        page = page + Fragment(" limit %s", [plan.limit], ["limit"])
    if plan.offset:
        page = page + Fragment(" offset %s", [plan.offset], ["offset"])
    if head:
        body = frag("null::text")
    elif plan.singular:
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


def planned_rows(explain_rows: Sequence[tuple[Any, ...]]) -> int | None:
    """The planner's row estimate from `EXPLAIN (FORMAT JSON)`."""
    if not explain_rows:
        return None
    document = explain_rows[0][0]
    if isinstance(document, bytes):
        document = document.decode()
    if isinstance(document, str):
        document = json.loads(document)
    try:
        return int(document[0]["Plan"]["Plan Rows"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def content_range(offset: int, rows: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    if rows == 0:
        return f"*/{total_text}"
    return f"{offset}-{offset + rows - 1}/{total_text}"


# -- function calls ----------------------------------------------------------------------------------


def function_call(fn: Function, values: Mapping[str, Any], catalog: Catalog) -> Fragment:
    """`api.fn(a => %s::bigint, b => %s::jsonb)` with named arguments, in declaration order."""
    parts: list[Fragment] = []
    for arg in fn.args:
        if arg.name not in values:
            continue
        value = values[arg.name]
        prefix = "variadic " if arg.variadic else ""
        parts.append(
            Fragment(prefix + ident(arg.name) + " => ") + value_param(value, arg.type, catalog, arg.name)
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
