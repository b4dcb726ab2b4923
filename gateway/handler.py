"""The API's handler: the request through its stages, each taking the value the one before it gave.

    Request -> ApiRequest (request) -> Plan (plan) -> Query (query) -> Result (execute) -> Response (response)

as PostgREST's App.hs chains ApiRequest -> Plan -> Query -> Response. A read's plan and statements are
kept in the route table for the next request with the same URL, shaping headers and kind of caller, so a
repeated read goes from its ApiRequest straight to the transaction. With replicas, a write's response
carries its commit position (gateway.replicas).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.csrf import Cookies
from gateway.execute import execute
from gateway.plan import make_plan
from gateway.query import Query, build_query
from gateway.replicas import stamp_commit
from gateway.request import ApiRequest, read_request
from gateway.response import allowed_methods, respond

if TYPE_CHECKING:
    from gateway.app import Gateway

_READS = frozenset({"GET", "HEAD"})


async def handle(request: Request) -> Response:
    """Every path the gateway does not serve itself: declared routes, /rpc/{function}, /{view}."""
    gateway: Gateway = request.app.state.gateway
    api = await read_request(request, gateway)
    if api.endpoint is None:
        return allowed_methods(api)
    query = kept_read(api)
    if query is None:
        query = build_query(make_plan(api, gateway.settings), api.schema)
        keep_read(api, query)
    result = await execute(api, query, gateway)
    response = respond(api, query.plan, result)
    if result.lsn is not None:
        settings = gateway.settings
        cookie = Cookies(settings.cookie_secure) if api.identity.via == "cookie" else None
        stamp_commit(response, result.lsn, cookie=cookie, max_lag=settings.replicas.max_lag)
    return response


def kept_read(api: ApiRequest) -> Query | None:
    """The plan and statements of the same read served lately, if any."""
    if api.method not in _READS:
        return None
    return api.routes.reads.get(api.read_key)


def keep_read(api: ApiRequest, query: Query) -> None:
    if api.method in _READS:
        api.routes.remember(api.read_key, query)
