"""The parts create_app is made of: the OpenAPI of the gateway's own paths (data in openapi_paths.json), and
the lifespan (the pool's dead-connection check, and everything started at startup stopped at shutdown)."""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import psycopg
import pytest

from gateway import openapi
from gateway.app import AUTH_ENDPOINTS, create_app
from tests.gateway.conftest import GatewayDb, gateway_of, serve, settings_for

# -- the OpenAPI of the paths the gateway serves itself ---------------------------------------------------


def test_own_paths_are_the_auth_endpoints_and_health() -> None:
    paths = openapi.own_paths("cc_session", "cc_csrf")
    assert list(paths) == [path for path, _name in AUTH_ENDPOINTS] + ["/health"]
    for path, name in AUTH_ENDPOINTS:
        assert list(paths[path]) == ["post"]
        assert paths[path]["post"]["operationId"] == name
    assert paths["/health"]["get"]["operationId"] == "health"


def test_every_shared_piece_is_used_and_inlined() -> None:
    raw = json.loads(resources.files("gateway").joinpath(openapi.OWN_PATHS_FILE).read_text())
    text = json.dumps(raw["paths"])
    unused = [name for name in raw["shared"] if f'"#/shared/{name}"' not in text]
    assert unused == []
    served = json.dumps(openapi.own_paths("cc_session", "cc_csrf"))
    assert "#/shared/" not in served
    # the document's own references stay references
    assert '"$ref": "#/components/schemas/Error"' in served
    login = openapi.own_paths("cc_session", "cc_csrf")["/auth/login"]["post"]
    assert login["requestBody"] == raw["shared"]["credentials"]
    assert login["responses"]["429"]["content"] == raw["shared"]["error"]


def test_cookie_names_are_filled_in_and_each_call_is_a_fresh_copy() -> None:
    paths = openapi.own_paths("__Host-s", "__Host-c")
    for path in ("/auth/signup", "/auth/login"):
        description = paths[path]["post"]["description"]
        assert description.startswith("Sets `__Host-s` (HttpOnly JWT) and `__Host-c` (send it back")
    assert "{session_cookie}" not in json.dumps(paths)
    assert "{csrf_cookie}" not in json.dumps(paths)
    paths["/auth/login"]["post"]["responses"]["429"]["description"] = "changed"
    paths["/auth/token"]["post"]["requestBody"]["required"] = False
    again = openapi.own_paths("s", "c")
    assert again["/auth/login"]["post"]["responses"]["429"]["description"].startswith("Failed too often")
    assert again["/auth/token"]["post"]["requestBody"]["required"] is True
    assert "`s`" in again["/auth/login"]["post"]["description"]


# -- the lifespan -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pooled_connections_the_server_closed_are_all_replaced_at_the_first_request(
    gw_fresh: GatewayDb,
) -> None:
    """A restart closes every pooled connection: the first request that meets one drains the pool (one
    connection found lost, not one per request), and it and the next requests are served."""
    app = create_app(settings_for(gw_fresh, pool_min=3, pool_max=3))
    async with serve(app) as client:
        pool = gateway_of(client).pool
        assert pool is not None
        await pool.wait(timeout=10)
        with psycopg.connect(gw_fresh.admin_url, autocommit=True) as admin:
            killed = admin.execute(
                "select count(*) filter (where pg_terminate_backend(pid, 5000)) from pg_stat_activity"
                " where datname = current_database() and application_name = 'commercecore-gateway'"
            ).fetchone()
        assert killed == (3,)
        for _ in range(4):
            response = await client.get("/products?limit=1")
            assert response.status_code == 200, response.text
        assert pool.get_stats().get("connections_lost", 0) == 1


@pytest.mark.anyio
async def test_shutdown_stops_what_startup_started(gw_db: GatewayDb) -> None:
    app = create_app(settings_for(gw_db))
    background = {"schema-listener", "schema-notify-check", "pool-metrics"}
    async with serve(app) as client:
        assert (await client.get("/health")).status_code == 200
        pool = app.state.pool
        listener = app.state.listener
        assert listener.task is not None
        running = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
        # the NOTIFY check and the pool metrics (one worker) may have finished already; the listener runs on
        assert "schema-listener" in running
    assert pool.closed
    assert listener.task is None
    assert not {task.get_name() for task in asyncio.all_tasks() if not task.done()} & background
