"""The response stage: the result of a plan's transaction -> the HTTP response.

The body is the JSON PostgreSQL built, passed through untouched. The status is the plan's (200, 204 for a
void function, 206 for a partial page), unless the function set `response.status`; a read answers
`Content-Range` (406 when one object was asked for and the rows are not one, 404 for a path-addressed row
that is absent, 416 for a page past the end); the headers a function set in `response.headers` are added
when they are safe to send. A read's reply carries its entity tag and caching headers, and If-None-Match
that names the tag is answered 304 (gateway.conditional). The `Reply`, the response before it is sent, is
what the catalog cache keeps.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from gateway import conditional, db
from gateway.dialect import ReadPlan
from gateway.errors import ApiError
from gateway.plan import Plan
from gateway.request import ApiRequest

log = logging.getLogger("commercecore.gateway")

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


@dataclass(frozen=True, slots=True)
class Reply:
    """A response before it is sent: the value the catalog cache keeps (gateway.catalog_cache) and answers
    later requests with."""

    status: int
    body: bytes | None
    headers: tuple[tuple[str, str], ...]  # Content-Range, and what the function set in response.headers
    etag: str | None = None  # a successful read's (gateway.conditional)
    custom: bool = False  # the function set response.status or response.headers

    @property
    def size(self) -> int:
        """About the bytes it holds."""
        return len(self.body or b"") + sum(len(name) + len(value) for name, value in self.headers) + 64


def respond(
    api: ApiRequest, plan: Plan, result: db.Result, keep: Callable[[Reply], None] | None = None
) -> Response:
    """The response to a request whose plan's transaction gave `result`; `keep` is given the reply first
    (the catalog cache's fill of a miss)."""
    reply = make_reply(api, plan, result)
    if keep is not None:
        keep(reply)
    return answer(api, reply)


def make_reply(api: ApiRequest, plan: Plan, result: db.Result) -> Reply:
    headers: list[tuple[str, str]] = []
    if plan.kind == "call":
        status, body = call_body(plan, result)
    else:
        status, body = read_body(api, plan, result, headers)
    headers.extend(response_headers(result.headers))
    read = api.read_method == "GET" and body is not None and 200 <= status < 300
    return Reply(
        status,
        body,
        tuple(headers),
        etag=conditional.entity_tag(body) if read and body is not None else None,
        custom=bool(result.status or result.headers),
    )


def answer(api: ApiRequest, reply: Reply) -> Response:
    """The HTTP response of a reply, for this request: 304 when its If-None-Match names the reply's tag,
    no body for HEAD, the caching headers of a read (gateway.conditional)."""
    authenticated = api.identity.authenticated
    if reply.etag is not None and conditional.none_match(api.headers.get("if-none-match"), reply.etag):
        return conditional.not_modified(reply.etag, authenticated)
    body = reply.body
    content = b"" if api.head or body is None else body
    response = Response(
        content, status_code=reply.status, media_type=JSON_MEDIA_TYPE if body is not None else None
    )
    headers = response.headers
    if api.head and body is not None:
        headers["content-length"] = str(len(body))
    for name, value in reply.headers:
        headers.append(name, value)
    if api.read_method == "GET":
        if reply.etag is not None:
            headers["ETag"] = reply.etag
        headers["Cache-Control"] = conditional.cache_control(authenticated)
        headers["Vary"] = conditional.VARY
    if api.profile_requested:
        headers["Content-Profile"] = "api"
    return response


def allowed_methods(api: ApiRequest) -> Response:
    """204 with Allow: the answer to OPTIONS on a path some method is served on."""
    allowed = api.target.allowed
    methods = sorted(allowed | ({"HEAD"} if "GET" in allowed else set()) | {"OPTIONS"})
    return Response(status_code=204, headers={"Allow": ", ".join(methods)})


def call_body(plan: Plan, result: db.Result) -> tuple[int, bytes | None]:
    """The status and body of a call: the function's value (JSON null for none), no body for the statuses
    that have none."""
    rows = result.rows[0]
    body: bytes | None = rows[0][0] if rows else None
    status = response_status(result.status, plan.default_status)
    if status in (204, 205, 304) or status < 200:
        return status, None  # these statuses have no body, whatever the function returned
    return status, b"null" if body is None else body


def read_body(
    api: ApiRequest, plan: Plan, result: db.Result, headers: list[tuple[str, str]]
) -> tuple[int, bytes | None]:
    """The status and body of a read; its Content-Range goes to `headers`."""
    read = plan.read
    assert read is not None
    body, page_rows, total = result.rows[0][0]
    total = counted_total(read, total, result.rows[1] if len(result.rows) > 1 else None)
    headers.append(("Content-Range", content_range(read.offset, page_rows, total)))
    status = 200
    if plan.kind == "single" or read.singular:
        check_single(api, plan, page_rows)
    elif total is not None and read.offset > 0 and read.offset >= total:
        raise ApiError(
            416,
            "PGRST103",
            f"The range starts at {read.offset} but there are {total} rows.",
            details={"code": "range_not_satisfiable", "total": total},
            headers={"Content-Range": f"*/{total}"},
        )
    elif total is not None and page_rows < total:
        status = 206
    return response_status(result.status, status), body


def counted_total(read: ReadPlan, total: int | None, explain: Sequence[tuple[Any, ...]] | None) -> int | None:
    """The total of Content-Range: none unless asked for; counted (exact, or estimated below its limit),
    else the planner's estimate."""
    if read.count in ("planned", "estimated") and explain is not None:
        planned = planned_rows(explain)
        if read.count == "planned" or total is None or total > read.count_limit:
            total = planned
    return None if read.count is None else total


def check_single(api: ApiRequest, plan: Plan, page_rows: int) -> None:
    """One object was asked for (or a path-addressed row, 404 when absent): 406 unless there is one row."""
    if page_rows == 1:
        return
    if plan.kind == "single" and page_rows == 0:
        raise ApiError(
            404,
            "PGRST116",
            "No row at this address.",
            details={"code": "not_found", "resource": api.url_path},
        )
    raise ApiError(
        406,
        "PGRST116",
        f"A single JSON object was requested but the result has {page_rows} rows.",
        details={"code": "not_single", "rows": page_rows},
    )


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
    """The status a function set in `response.status`, when it is one."""
    if not raw:
        return default
    try:
        status = int(raw)
    except ValueError:
        log.warning("response.status %.50r is not a number", raw)
        return default
    return status if 100 <= status <= 599 else default
