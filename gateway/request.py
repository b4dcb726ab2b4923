"""The request stage: a Starlette request read once into an ApiRequest, the value the later stages take.

It answers what it can in the order the gateway always has: the schema profile and Accept (406), the
schema cache (503 while it is not loaded), the route (404, or 405 with Allow), the identity (401, or 403 for
a cookie write without its CSRF token), the JSON body of a function call (413, 415, 400). A path that
matches nothing is refused before anyone is authenticated or any body read. Nothing after this stage
touches the Starlette request; what the access log and the metrics say of the request (its route, role,
user and SQLSTATE) goes to the ASGI scope's state, which the stages share through `ApiRequest.state`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import Scope

from gateway.db import ANONYMOUS, Identity
from gateway.dialect import ReadOptions
from gateway.errors import ApiError, not_found
from gateway.http import SAFE_METHODS, read_json_object, url_path
from gateway.routes import Endpoint, Match, RouteTable
from gateway.schema_cache import SchemaCache
from gateway.settings import Settings

SCHEMA_PROFILE = "api"
IDEMPOTENCY_HEADER = "idempotency-key"
OBJECT_MEDIA_TYPE = "application/vnd.pgrst.object+json"
_JSON_TYPES = ("application/json", "application/*", "*/*", OBJECT_MEDIA_TYPE)
# the headers a read's plan and statements depend on (with its method, path and query string)
_READ_HEADERS = ("range", "range-unit", "prefer", "accept", IDEMPOTENCY_HEADER)


class Gateway(Protocol):
    """What the request stage uses of the gateway (gateway.app.Gateway)."""

    @property
    def settings(self) -> Settings: ...

    async def schema(self) -> tuple[SchemaCache, RouteTable]: ...

    def authenticate(self, request: Request) -> Identity: ...


@dataclass(frozen=True)
class ApiRequest:
    """One request to the API, as the plan, query, transaction and response stages see it."""

    method: str  # as sent: HEAD is answered as GET without a body
    path: str  # the ASGI path (percent-decoded)
    url_path: str  # the path as `request.url.path` gives it, for messages and the request.path setting
    query_string: bytes
    headers: Mapping[str, str]  # lower-case names; the first of repeated ones
    request_id: str
    # the schema cache and route table the request started with: a reload in flight does not change them
    schema: SchemaCache
    routes: RouteTable
    # what the path reached: an endpoint with its path parameters, or (OPTIONS) the methods it allows
    target: Match
    identity: Identity = ANONYMOUS
    body: Mapping[str, Any] | None = None  # a function call's JSON object
    # the ASGI scope's state: route, role, user id and SQLSTATE for the access log and the metrics
    state: MutableMapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def endpoint(self) -> Endpoint | None:
        return self.target.endpoint

    @property
    def head(self) -> bool:
        return self.method == "HEAD"

    @property
    def read_method(self) -> str:
        """The method the request is served as: GET for HEAD."""
        return "GET" if self.method == "HEAD" else self.method

    @property
    def query(self) -> tuple[tuple[str, str], ...]:
        """The query string's items in order, as Starlette's `request.query_params` parses them (parsed when
        asked for: a kept read never asks)."""
        return tuple(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))

    @property
    def preferences(self) -> dict[str, str]:
        """`Prefer: count=exact, return=representation` -> {"count": "exact", "return": "representation"}."""
        return parse_prefer(self.headers.get("prefer", ""))

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY_HEADER)

    @property
    def read_options(self) -> ReadOptions:
        """What the headers ask of a read: the Range, the count, one object rather than an array."""
        headers = self.headers
        return ReadOptions(
            range=headers.get("range"),
            range_unit=headers.get("range-unit", "items"),
            count=self.preferences.get("count"),
            singular=OBJECT_MEDIA_TYPE in headers.get("accept", ""),
        )

    @property
    def profile_requested(self) -> bool:
        """Whether the client named a schema profile (the response then names the one it got)."""
        return bool(self.headers.get("accept-profile") or self.headers.get("content-profile"))

    @property
    def read_key(self) -> tuple[Any, ...]:
        """What a read's plan and statements depend on: the URL, the headers that shape a read, and the
        kind of caller (an anonymous count is bounded)."""
        headers = self.headers
        return (
            self.method,
            self.path,
            self.query_string,
            not self.identity.authenticated,
            *map(headers.get, _READ_HEADERS),
        )


async def read_request(request: Request, gateway: Gateway) -> ApiRequest:
    """The request as an ApiRequest, or the error it gets (see the module's docstring for the order)."""
    scope = request.scope
    state: MutableMapping[str, Any] = scope.setdefault("state", {})
    state["route"] = "unmatched"
    method: str = scope["method"]
    headers = headers_of(scope)
    check_profile(method, headers)
    check_accept(headers)
    schema, routes = await gateway.schema()
    target = routes.match(method, scope["path"])
    path = url_path(scope)
    identity, body = ANONYMOUS, None
    if target.endpoint is None:
        unmatched(method, path, target.allowed)
        state["route"] = "OPTIONS"
    else:
        state["route"] = target.endpoint.template
        identity = gateway.authenticate(request)
        state["role"], state["user_id"] = identity.role, identity.user_id
        if method not in ("GET", "HEAD") and target.endpoint.functions:
            body = await read_json_object(request, gateway.settings.body_limit)
    return ApiRequest(
        method=method,
        path=scope["path"],
        url_path=path,
        query_string=scope["query_string"],
        headers=headers,
        request_id=str(state.get("request_id", "")),
        schema=schema,
        routes=routes,
        target=target,
        identity=identity,
        body=body,
        state=state,
    )


def unmatched(method: str, path: str, allowed: frozenset[str]) -> None:
    """Returns for an OPTIONS request to a path some method is served on (answered with Allow); raises
    405 for a path served on other methods, 404 for one served on none."""
    if method == "OPTIONS" and allowed:
        return
    if allowed:
        methods = sorted(allowed | ({"HEAD"} if "GET" in allowed else set()))
        raise ApiError(
            405,
            "PGRST117",
            f"{method} is not allowed here; allowed: {', '.join(methods)}.",
            details={"code": "method_not_allowed", "allowed": methods},
            headers={"Allow": ", ".join(methods)},
        )
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


def headers_of(scope: Scope) -> dict[str, str]:
    """The request's headers as a dict (lower-case names; the first of repeated ones, as
    `request.headers.get` gives it)."""
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        if name not in found:
            found[name] = value.decode("latin-1")
    return found


def parse_prefer(header: str) -> dict[str, str]:
    """`count=exact, return=representation` -> {"count": "exact", "return": "representation"}."""
    prefs: dict[str, str] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key:
            prefs[key.strip().lower()] = value.strip().lower()
    return prefs


def check_profile(method: str, headers: Mapping[str, str]) -> str | None:
    """Accept-Profile (reads) / Content-Profile (writes): only `api` is served; anything else is 406."""
    header = "accept-profile" if method in SAFE_METHODS else "content-profile"
    profile = headers.get(header)
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


def check_accept(headers: Mapping[str, str]) -> None:
    """406 unless the client accepts JSON (no Accept header accepts anything)."""
    accept = headers.get("accept")
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
