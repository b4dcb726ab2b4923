"""Each route is declared once: no method and path is both declared in SQL (an `@route` line in a comment)
and served by a route of the gateway's own (its endpoints, the auth endpoints, the Stripe paths), so the
order routes are mounted in never decides which one runs."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.app import create_app
from gateway.handler import handle
from gateway.payments import PaymentService
from tests.gateway.conftest import GatewayDb, gateway_of, serve, settings_for

pytestmark = pytest.mark.anyio


def shape(path: str) -> str:
    """A path with its parameters blanked ({id} and {order_id:int} alike): the part that matches."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def served_by_python(app: Starlette) -> set[tuple[str, str]]:
    """(method, path shape) of the gateway's own routes, the catch-all excepted (HEAD goes with GET)."""
    return {
        (method, shape(route.path_format))
        for route in app.routes
        if isinstance(route, Route) and route.endpoint is not handle
        for method in route.methods or ()
        if method != "HEAD"
    }


async def declared_in_sql(client: httpx.AsyncClient) -> set[tuple[str, str]]:
    cache, _table = await gateway_of(client).schema()
    routes = [route for view in cache.views.values() for route in view.routes]
    routes += [route for overloads in cache.functions.values() for fn in overloads for route in fn.routes]
    return {(route.method, shape(route.template)) for route in routes}


async def test_no_route_is_declared_both_in_sql_and_in_python(gw_db: GatewayDb) -> None:
    app = create_app(settings_for(gw_db), payments=PaymentService.from_env({"COMMERCECORE_DEMO": "1"}))
    async with serve(app) as client:
        sql_routes = await declared_in_sql(client)
        python_routes = served_by_python(app)
        assert ("GET", "/orders/{}") in sql_routes  # the SQL routes were found
        assert sql_routes & python_routes == set()
        # the refund needs Stripe: its one declaration is the Stripe paths' Python route, documented with the
        # comment, arguments and result of the function it calls
        assert ("POST", "/orders/{}/refund") in python_routes
        document = (await client.get("/openapi.json")).json()
    refund = document["paths"]["/orders/{order_id}/refund"]["post"]
    rpc = document["paths"]["/rpc/refund_order"]["post"]
    assert refund["operationId"] == "post_refund_order"
    assert refund["description"] == rpc["description"]
    assert [(p["name"], p["in"]) for p in refund["parameters"]] == [
        ("order_id", "path"),
        ("Idempotency-Key", "header"),
    ]
    assert set(refund["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"amount"}


async def test_without_the_stripe_paths_the_refund_path_is_neither_served_nor_documented(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders/1/refund", json={})
    assert response.status_code == 404, response.text
    document = (await client.get("/openapi.json")).json()
    assert "/orders/{order_id}/refund" not in document["paths"]
    assert "post" in document["paths"]["/rpc/refund_order"]
