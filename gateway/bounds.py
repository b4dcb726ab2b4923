"""The size of a request before anything reads it: the URL (414) and the headers (431).

Checked twice: by the HTTP protocol of `commercecore serve` while the request arrives (gateway.server), so a
10 MB URL is refused after its first kilobytes instead of being read, joined and parsed whole; and by the
application on the ASGI scope, for any other server the app runs under.
"""

from __future__ import annotations

from starlette.types import Scope

from gateway.errors import ApiError
from gateway.settings import RequestLimits


def uri_too_long(limit: int, part: str) -> ApiError:
    return ApiError(
        414,
        "CC414",
        f"The URL's {part} is longer than {limit} bytes.",
        details={"code": "uri_too_long", "limit": limit, "field": part},
        hint="Send fewer or shorter filters; a long list of ids belongs in several requests.",
    )


def headers_too_large(limits: RequestLimits, count: int, size: int) -> ApiError:
    return ApiError(
        431,
        "CC431",
        f"The request has {count} header lines of {size} bytes; at most {limits.max_headers} lines of"
        f" {limits.max_header_bytes} bytes in all are read.",
        details={
            "code": "headers_too_large",
            "limit": {"count": limits.max_headers, "bytes": limits.max_header_bytes},
            "count": count,
            "bytes": size,
        },
    )


def target_refusal(path: bytes, query: bytes, limits: RequestLimits) -> ApiError | None:
    """414 when the path or the query string is longer than the limit (both in bytes, as sent)."""
    if len(query) > limits.max_query_bytes:
        return uri_too_long(limits.max_query_bytes, "query string")
    if len(path) > limits.max_query_bytes:
        return uri_too_long(limits.max_query_bytes, "path")
    return None


def refusal(scope: Scope, limits: RequestLimits) -> ApiError | None:
    """Why a request is too large to be served, or None."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    found = target_refusal(raw_path, scope.get("query_string", b""), limits)
    if found is not None:
        return found
    headers = scope["headers"]
    if len(headers) > limits.max_headers:
        return headers_too_large(limits, len(headers), sum(len(k) + len(v) for k, v in headers))
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
    if size > limits.max_header_bytes:
        return headers_too_large(limits, len(headers), size)
    return None
