"""Small HTTP helpers shared by the routes: request ids, bodies with a size limit, JSON, profiles."""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from gateway.errors import ApiError, invalid_json

# what a client-sent X-Request-Id may be to be kept (it reaches the logs and the audit trail): short, and
# nothing a log reader could mistake for structure
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCHEMA_PROFILE = "api"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_random = random.Random()  # noqa: S311 - request ids are unique, not secret
# a forked worker must not repeat its parent's sequence
os.register_at_fork(after_in_child=_random.seed)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-Id when it is 1-64 characters of [A-Za-z0-9._-], else a fresh uuid4."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    # a version-4 UUID from the process's Mersenne Twister (seeded from os.urandom at start): unique, not
    # secret, and without a getrandom() system call per request
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


def url_path(scope: Scope) -> str:
    """The request's path as Starlette's `request.url.path` gives it (`?`, `#` and `\\` escaped), without
    building the URL."""
    path: str = scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def headers_of(request: Request) -> dict[str, str]:
    """The request's headers as a dict (lower-case names; the first of repeated ones, as
    `request.headers.get` gives it), built once per request."""
    scope = request.scope
    found: dict[str, str] | None = scope.get("commercecore.headers")
    if found is None:
        found = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1")
            if name not in found:
                found[name] = value.decode("latin-1")
        scope["commercecore.headers"] = found
    return found


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (`name` in lower case) straight from the ASGI scope."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def payload_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "CC413",
        f"The request body is larger than {limit} bytes.",
        details={"code": "payload_too_large", "limit": limit},
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (checked on Content-Length and while reading)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(
                400, "PGRST102", "Content-Length is not a number.", details={"code": "invalid_request"}
            )
        if int(length) > limit:
            raise payload_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise invalid_json("it is not UTF-8") from None
    except ValueError as exc:
        raise invalid_json(str(exc)) from None
    except RecursionError:
        raise invalid_json("it nests too deeply") from None


async def read_json_object(request: Request, limit: int, *, empty_ok: bool = True) -> dict[str, Any]:
    """A JSON object body (an empty body is {} when allowed); 413, 415 or 400 otherwise."""
    body = await read_body(request, limit)
    if not body.strip():
        if empty_ok:
            return {}
        raise invalid_json("the body is empty; send a JSON object")
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", "") and not content_type.endswith("+json"):
        raise ApiError(
            415,
            "PGRST107",
            f"Content-Type {content_type!r} is not supported; send application/json.",
            details={"code": "unsupported_media_type"},
        )
    value = parse_json(body)
    if not isinstance(value, dict):
        raise ApiError(
            400,
            "PGRST102",
            f"The request body must be a JSON object, not {type(value).__name__}.",
            details={"code": "invalid_body"},
        )
    return value


def check_profile(request: Request) -> str | None:
    """Accept-Profile (reads) / Content-Profile (writes): only `api` is served; anything else is 406."""
    header = "accept-profile" if request.method in SAFE_METHODS else "content-profile"
    profile = headers_of(request).get(header)
    if profile is None:
        return None
    if profile.strip() != SCHEMA_PROFILE:
        raise ApiError(
            406,
            "PGRST106",
            f"The schema {profile.strip()!r} is not served; the only profile is {SCHEMA_PROFILE!r}.",
            details={"code": "invalid_profile"},
            hint=f"Send {header.title()}: {SCHEMA_PROFILE} or no profile header.",
        )
    return SCHEMA_PROFILE


_JSON_TYPES = ("application/json", "application/*", "*/*", "application/vnd.pgrst.object+json")


def check_accept(request: Request) -> None:
    """406 unless the client accepts JSON (no Accept header accepts anything)."""
    accept = headers_of(request).get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _JSON_TYPES or media.endswith("+json"):
            return
    raise ApiError(
        406,
        "PGRST107",
        f"None of the media types in Accept ({accept}) can be served; responses are application/json.",
        details={"code": "not_acceptable"},
    )


def client_address(scope: Scope) -> str:
    """The client's address: the connection's peer, or what a trusted proxy named (see gateway.app)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
