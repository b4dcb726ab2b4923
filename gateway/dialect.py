"""The PostgREST read dialect: the query string and headers of a read -> a ReadPlan.

`select=`, filters (`column=op.value`, `or=(...)`, `and=(...)`), `order=`, `limit`/`offset`, `Range` and
`Prefer: count=`, checked against what the source offers (its columns, and the columns it declares for
full-text search, patterns and order) and against the request limits. Only names the schema cache gives
reach the plan; values stay text for PostgreSQL to parse (gateway.query writes the SQL).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import patterns
from gateway.errors import ApiError, bad_request
from gateway.schema_cache import Column, ReadRules
from gateway.settings import RequestLimits

COMPARISONS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte"})
LIKE = frozenset({"like", "ilike"})
MATCH = frozenset({"match", "imatch"})
IS_VALUES = frozenset({"null", "not_null", "true", "false", "unknown"})
_PATTERN_TYPES = frozenset({"text", "character varying"})
_FTS_OP = re.compile(r"^(fts|plfts|phfts|wfts)(?:\(([^()]*)\))?$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RANGE = re.compile(r"^(?:items=)?\s*(\d{1,18})-(\d{0,18})\s*$", re.IGNORECASE)
COUNT_METHODS = ("exact", "planned", "estimated")


class RawText(str):
    """A value that arrived as text (query string, path, header): PostgreSQL parses it, JSON types too."""

    __slots__ = ()


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


@dataclass(frozen=True)
class ReadOptions:
    """What the headers of a request ask of a read: a Range (`Range`, `Range-Unit`), a count
    (`Prefer: count=`) and one object rather than an array (`Accept: application/vnd.pgrst.object+json`)."""

    range: str | None = None
    range_unit: str = "items"
    count: str | None = None  # as preferred; only COUNT_METHODS count
    singular: bool = False


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
    if operator in LIKE:
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
    if operator in COMPARISONS:
        return Filter(column, operator, value, negate)
    if operator in LIKE or operator in MATCH:
        return _pattern_filter(source, column, operator, value, negate)
    if operator == "in":
        values = _parse_list(value)
        if len(values) > source.limits.max_in_values:
            raise too_many(
                "in. values", "too_many_values", source.limits.max_in_values, len(values), column.name
            )
        return Filter(column, operator, values, negate)
    if operator == "is":
        if value.lower() not in IS_VALUES:
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


def parse_read(
    params: Sequence[tuple[str, str]],
    source: Source,
    options: ReadOptions,
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

    _page(plan, options, offset, limit, max_rows)
    if options.count in COUNT_METHODS:
        plan.count = options.count
    plan.singular = options.singular
    return plan


def _page(plan: ReadPlan, options: ReadOptions, offset: int, limit: int | None, max_rows: int) -> None:
    """The page of a read: offset and limit, narrowed by a Range header, capped at max_rows."""
    lower, upper = offset, (offset + limit - 1 if limit is not None else None)
    range_header = options.range
    if range_header is not None and "=" in range_header and not range_header.lower().startswith("items="):
        range_header = None  # a range unit other than items (bytes=...): ignored, as RFC 9110 says
    if range_header is not None and options.range_unit.lower() == "items":
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
