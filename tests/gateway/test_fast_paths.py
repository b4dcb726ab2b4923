"""The gateway's fast paths keep the behaviour of the slow ones: named prepared statements (and their
recovery), one batch per transaction, the read-statement cache, the verified-token cache, the catch-all
route tried first, request ids, and the batched access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from starlette.routing import Mount, Route

from gateway import db
from gateway.app import create_app, first_segments
from gateway.auth import Tokens
from gateway.errors import ApiError
from gateway.logs import JsonFormatter, LineHandler
from tests.gateway.conftest import GatewayDb, bearer, gateway_of, serve, settings_for, signup

pytestmark = pytest.mark.anyio


async def server_prepared(client: httpx.AsyncClient) -> set[str]:
    """The names of the statements the server holds prepared on the gateway's (single) connection."""
    pool = gateway_of(client).pool
    assert pool is not None
    async with pool.connection() as conn:
        rows = await (await conn.execute("select name from pg_prepared_statements")).fetchall()
        known = set(db.prepared_statements(conn).names.values())
    names = {str(row[0]) for row in rows}
    # whatever the gateway believes prepared, the server has
    assert {name.decode() for name in known} <= names
    return names


async def test_statements_are_prepared_once_per_connection(gw_db: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_db, pool_min=1, pool_max=1))) as client:
        first = await client.get("/gw_things", params={"order": "id", "limit": "2"})
        assert first.status_code == 200, first.text
        prepared = await server_prepared(client)
        assert prepared, "no statement was prepared"
        for _ in range(3):
            again = await client.get("/gw_things", params={"order": "id", "limit": "2"})
            assert again.json() == first.json()
        assert await server_prepared(client) == prepared
        other = await client.get("/gw_things", params={"name": "eq.beta"})
        assert [row["name"] for row in other.json()] == ["beta"]
        assert len(await server_prepared(client)) == len(prepared) + 1  # only the new read statement


async def test_prepared_statements_can_be_turned_off(gw_db: GatewayDb) -> None:
    settings = settings_for(gw_db, pool_min=1, pool_max=1, prepared_statements=False)
    async with serve(create_app(settings)) as client:
        response = await client.get("/gw_things", params={"order": "id", "limit": "2"})
        assert response.status_code == 200, response.text
        assert await server_prepared(client) == set()


async def test_statements_deallocated_behind_its_back_are_prepared_again(gw_db: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_db, pool_min=1, pool_max=1))) as client:
        first = await client.get("/gw/things/1")
        assert first.status_code == 200, first.text
        pool = gateway_of(client).pool
        assert pool is not None
        async with pool.connection() as conn:
            # what DISCARD ALL or a proxy handing out another server connection does
            await conn.execute("deallocate all")
        again = await client.get("/gw/things/1")
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert await server_prepared(client)


async def test_a_failed_statement_leaves_no_statement_believed_prepared(gw_db: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_db, pool_min=1, pool_max=1))) as client:
        # the first batch on the connection fails at its read (a value bigint cannot parse): the
        # statements queued after it were never prepared, whatever was sent for them
        failed = await client.get("/gw_things", params={"id": "eq.not-a-number"})
        assert failed.status_code == 400, failed.text
        assert failed.json()["details"]["field"] == "id"
        await server_prepared(client)
        written = await client.post("/rpc/gw_echo", json={"a": 5})
        assert written.status_code == 200, written.text
        assert written.json()["a"] == 5
        await server_prepared(client)


async def test_errors_name_their_statement_and_roll_back(fresh_client: httpx.AsyncClient) -> None:
    response = await fresh_client.post("/rpc/gw_fail", json={"kind": "unique"})
    assert response.status_code == 409
    # the transaction was rolled back and the connection is clean: the next request commits
    response = await fresh_client.post("/gw/things", json={"name": f"after-{uuid.uuid4().hex[:6]}"})
    assert response.status_code == 201, response.text
    assert response.headers["location"].startswith("/gw/things/")


async def test_reads_with_the_same_url_but_other_headers_differ(client: httpx.AsyncClient) -> None:
    plain = await client.get("/gw_things", params={"order": "id"})
    counted = await client.get("/gw_things", params={"order": "id"}, headers={"Prefer": "count=exact"})
    ranged = await client.get("/gw_things", params={"order": "id"}, headers={"Range": "0-1"})
    single = await client.get(
        "/gw_things", params={"id": "eq.1"}, headers={"Accept": "application/vnd.pgrst.object+json"}
    )
    head = await client.head("/gw_things", params={"order": "id"})
    assert plain.headers["content-range"] == "0-4/*"
    assert counted.headers["content-range"] == "0-4/5"
    assert ranged.headers["content-range"] == "0-1/*"
    assert len(ranged.json()) == 2
    assert single.json()["id"] == 1
    assert head.status_code == 200
    assert head.content == b""
    assert (await client.get("/gw_things", params={"order": "id"})).json() == plain.json()


async def test_a_schema_reload_forgets_the_read_statements(client: httpx.AsyncClient) -> None:
    assert (await client.get("/gw_things", params={"limit": "1"})).status_code == 200
    gateway = gateway_of(client)
    state = gateway.schema_state
    assert state is not None
    assert state.routes.prepared
    await gateway.reload()
    reloaded = gateway.schema_state
    assert reloaded is not None
    assert reloaded.routes is not state.routes
    assert len(reloaded.routes.prepared) == 0


def test_verified_tokens_are_reused_until_they_expire(gw_db: GatewayDb) -> None:
    tokens = Tokens(settings_for(gw_db, jwt_leeway=0))
    token = tokens.sign({"sub": "7", "role": "app_readwrite"}, str(uuid.uuid4()), _at(time.time() + 1.5))
    first = tokens.decode(token)
    first["sub"] = "changed by the caller"
    assert tokens.decode(token)["sub"] == "7"  # callers get copies
    assert token in tokens._verified
    time.sleep(2.1)  # past exp (whole seconds) + 0 s leeway
    with pytest.raises(ApiError, match="expired"):
        tokens.decode(token)
    assert token not in tokens._verified


async def test_a_revoked_session_is_refused_though_its_token_is_remembered(
    client: httpx.AsyncClient, peer: httpx.AsyncClient
) -> None:
    user = await signup(client)
    headers = await bearer(peer, user["email"])
    assert (await peer.get("/me", headers=headers)).status_code == 200
    assert (await peer.get("/me", headers=headers)).status_code == 200  # the token is remembered now
    assert (await peer.post("/auth/logout", headers=headers)).status_code == 204
    refused = await peer.get("/me", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["details"]["code"] == "session_revoked"


async def test_the_gateway_routes_stay_its_own(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json()["status"] == "ok"
    assert (await client.get("/openapi.json")).headers["content-type"].startswith("application/openapi+json")
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/auth/login")).status_code == 405
    assert (await client.get("/gw_things")).status_code == 200
    assert (await client.request("PURGE", "/gw_things")).status_code == 405
    assert (await client.get("/no_such_view")).json()["code"] == "PGRST125"


def test_first_segments() -> None:
    async def endpoint(request: Any) -> Any:
        raise AssertionError("routing only: never called")

    routes: list[Any] = [
        Route("/health", endpoint),
        Route("/auth/login", endpoint),
        Mount("/docs", routes=[]),
    ]
    assert first_segments(routes) == frozenset({"health", "auth", "docs"})
    assert first_segments([*routes, Route("/{anything}/x", endpoint)]) is None


async def test_request_ids_are_uuid4_when_the_client_sends_none(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/gw_things")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(uuid.UUID(value).version == 4 for value in ids)


def test_placeholders_become_numbered_parameters() -> None:
    assert db.to_postgres("select %s, '%%', %s") == b"select $1, '%', $2"
    with pytest.raises(psycopg.ProgrammingError):
        db.to_postgres("select %d")


def test_the_access_log_writes_a_loop_iteration_at_once() -> None:
    stream = io.StringIO()
    handler = LineHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("commercecore.test-lines")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("one")
        assert stream.getvalue().count("\n") == 1  # outside a loop: at once
        asyncio.run(_log_in_loop(logger, stream))
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    messages = [line.split('"message":"')[1].split('"')[0] for line in lines]
    assert messages == ["one", "two", "three", "four", "five"]


async def _log_in_loop(logger: logging.Logger, stream: io.StringIO) -> None:
    logger.info("two")
    logger.info("three")
    assert stream.getvalue().count("\n") == 1  # waiting for the end of this loop iteration
    logger.warning("four")  # a warning goes out at once, after the lines waiting
    assert stream.getvalue().count("\n") == 4
    logger.info("five")
    await asyncio.sleep(0)
    assert stream.getvalue().count("\n") == 5


def _at(moment: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(moment, UTC)


def test_the_access_log_line_is_the_same_with_or_without_a_record() -> None:
    from gateway import logs

    logs.configure()
    handler = logging.getLogger("commercecore").handlers[0]
    assert isinstance(handler, LineHandler)
    stream = io.StringIO()
    fields: dict[str, Any] = {
        "request_id": "r-1",
        "method": "GET",
        "path": '/a "quoted"\\path',
        "route": "/{view}",
        "status": 200,
        "duration_ms": 1.23456,
        "role": "app_readonly",
        "user_id": None,
        "client": "127.0.0.1",
        "sqlstate": None,
    }
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    original = handler.setStream(stream)
    try:
        logs.access(**fields)  # the fast path: no LogRecord
        collector = Collect()
        logging.getLogger(logs.ACCESS_LOGGER).addHandler(collector)
        try:
            logs.access(**fields)  # another listener: through a LogRecord
        finally:
            logging.getLogger(logs.ACCESS_LOGGER).removeHandler(collector)
    finally:
        handler.setStream(original)
    fast, slow = (json.loads(line) for line in stream.getvalue().splitlines())
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
    assert stamp.match(fast.pop("ts"))
    assert stamp.match(slow.pop("ts"))
    assert fast == slow
    assert list(fast) == list(slow)
    assert fast["message"] == "GET /{view} 200"
    assert len(records) == 1
    assert records[0].request_id == "r-1"  # type: ignore[attr-defined]
