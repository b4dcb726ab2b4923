"""OpenAPI, /docs, /metrics, /health, the access log, and schema cache reloads on NOTIFY."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import psycopg
import pytest
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.schema_cache import NOTIFY_CHANNEL
from tests.gateway.conftest import GatewayDb, gateway_of, serve, settings_for, signup

pytestmark = pytest.mark.anyio


async def test_openapi_is_valid_3_1_and_describes_the_surface(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openapi+json")
    document: dict[str, Any] = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    # generic surface
    assert "get" in paths["/gw_things"]
    assert {p["name"] for p in paths["/gw_things"]["get"]["parameters"]} >= {
        "select",
        "order",
        "limit",
        "name",
    }
    assert set(paths["/rpc/gw_echo"]) == {"get", "post"}  # STABLE: GET too
    assert set(paths["/rpc/gw_write"]) == {"post"}
    # declared routes, with their path parameters and the comment as documentation
    echo = paths["/gw/echo/{a}"]["get"]
    assert echo["description"] == "Echoes."
    a = next(p for p in echo["parameters"] if p["name"] == "a")
    assert a["in"] == "path"
    assert a["required"] is True
    assert a["schema"] == {"type": "integer", "format": "int32"}
    write = paths["/gw/things"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in write["parameters"])
    assert set(write["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"name"}
    # the real surface
    assert "post" in paths["/orders"]
    assert "get" in paths["/products/{id}"]
    assert "post" in paths["/auth/login"]
    schema = document["components"]["schemas"]["view_gw_things"]
    assert schema["properties"]["note"]["description"] == "A short note."
    assert "array" in schema["properties"]["tags"]["type"]


async def test_docs_are_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js"):
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100
    assert "/openapi.json" in (await client.get("/docs/init.js")).text


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.json() == {"status": "ok", "database": "ok", "schema_cache": "loaded"}


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/gw/things/1")
    await client.get("/gw/things/2")
    await client.get("/rpc/gw_scalar?n=1")
    await client.get("/no/such/thing")
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'commercecore_http_requests_total{method="GET",route="/gw/things/{id}",status="200"} 2.0' in text
    assert 'route="/rpc/{function}"' in text
    assert 'route="unmatched",status="404"' in text
    assert "commercecore_http_request_duration_seconds_bucket" in text
    assert "commercecore_db_pool_size" in text
    assert "commercecore_db_requests_waiting" in text
    assert 'commercecore_schema_cache_reloads_total{outcome="ok"}' in text


async def test_access_log_has_one_json_line_per_request(client: httpx.AsyncClient) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logger = logging.getLogger("commercecore.access")
    logger.addHandler(handler)
    try:
        user = await signup(client)
        await client.get("/gw/things/3", headers={"X-Request-Id": "log-me"})
    finally:
        logger.removeHandler(handler)
    from gateway.logs import JsonFormatter

    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["request_id"] == "log-me"
    assert line["method"] == "GET"
    assert line["route"] == "/gw/things/{id}"
    assert line["path"] == "/gw/things/3"
    assert line["status"] == 200
    assert line["role"] == "app_readwrite"
    assert line["user_id"] == user["id"]
    assert isinstance(line["duration_ms"], float)
    assert len(records) == 2


async def test_schema_cache_reloads_on_notify(gw_fresh: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_fresh))) as client:
        assert (await client.get("/rpc/gw_new")).status_code == 404
        gateway = gateway_of(client)
        reloaded = asyncio.Event()
        listener = client._transport.app.state.listener  # type: ignore[attr-defined]
        original = listener.reload

        async def reload() -> Any:
            result = await original()
            reloaded.set()
            return result

        listener.reload = reload
        before = gateway.schema_state
        with psycopg.connect(gw_fresh.admin_url, autocommit=True) as conn:
            conn.execute(
                "create function api.gw_new() returns text language sql stable as $$ select 'new' $$;"
                "comment on function api.gw_new() is 'New.\n@route GET /gw/new';"
                "grant execute on function api.gw_new() to app_readonly"
            )
            conn.execute(f"notify {NOTIFY_CHANNEL}, 'reload'")
        await asyncio.wait_for(reloaded.wait(), timeout=30)
        assert gateway.schema_state is not before
        assert (await client.get("/rpc/gw_new")).json() == "new"
        assert (await client.get("/gw/new")).json() == "new"
        assert "/gw/new" in (await client.get("/openapi.json")).json()["paths"]


async def test_a_bad_route_declaration_is_skipped_not_fatal(gw_fresh: GatewayDb) -> None:
    with psycopg.connect(gw_fresh.admin_url, autocommit=True) as conn:
        conn.execute(
            "create function api.gw_bad(x integer) returns integer language sql volatile as $$ select x $$;"
            "comment on function api.gw_bad(integer) is 'Bad.\n@route GET /gw/bad/{x}\n"
            "@route POST /gw/bad/{y}\n@route POST /rpc/gw_bad\n@route POST /gw/echo/{x}';"
            "grant execute on function api.gw_bad(integer) to app_readonly"
        )
    async with serve(create_app(settings_for(gw_fresh))) as client:
        schema, table = await gateway_of(client).schema()
        warnings = " ".join(schema.warnings) + " ".join(table.warnings)
        assert "GET serves only STABLE" in warnings
        assert "no argument or column named y" in warnings
        assert "served by the gateway itself" in warnings
        assert "declares it too" in warnings
        assert (await client.get("/gw/bad/1")).status_code == 404  # both declarations were refused
        assert (await client.post("/rpc/gw_bad", json={"x": 3})).json() == 3


async def test_demo_mode_mounts_the_stripe_paths(gw_db: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_db, demo=True))) as client:
        assert client._transport.app.state.payments is not None  # type: ignore[attr-defined]
        response = await client.post(
            "/webhooks/stripe", content=b"{}", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400  # no signature: refused, but the route is there
        assert response.headers["x-request-id"]
    async with serve(create_app(settings_for(gw_db))) as client:
        assert (await client.post("/webhooks/stripe", content=b"{}")).status_code == 404
