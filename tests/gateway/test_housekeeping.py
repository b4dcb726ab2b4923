"""Housekeeping and exposure: `__Host-` cookie names when the cookies are Secure (plain names on plain
http), client request ids kept only when short and plain (they reach the logs and the audit trail), and
the rows `commercecore jobs run` purged, counted in /metrics."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from commercecore.ops import jobs
from gateway import openapi
from gateway.app import create_app
from tests.gateway.conftest import PASSWORD, GatewayDb, serve, settings_for

pytestmark = pytest.mark.anyio

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
async def secure_client(gw_db: GatewayDb) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose cookies are Secure, over https (a cookie jar sends Secure cookies only there)."""
    app: Starlette = create_app(settings_for(gw_db, cookie_secure=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://gateway.test") as client:
            yield client


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """name -> the rest of each Set-Cookie header."""
    return {
        value.split("=", 1)[0]: value.split("=", 1)[1] for value in response.headers.get_list("set-cookie")
    }


async def test_secure_cookies_carry_the_host_prefix(secure_client: httpx.AsyncClient) -> None:
    email = f"c-{uuid.uuid4().hex[:8]}@example.com"
    response = await secure_client.post("/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201
    cookies = set_cookies(response)
    assert set(cookies) == {"__Host-cc_session", "__Host-cc_csrf"}
    for attributes in cookies.values():
        # what a browser demands of a __Host- cookie: Secure, Path=/, no Domain
        assert "; Secure" in attributes
        assert "; Path=/" in attributes
        assert "Domain" not in attributes
    assert "HttpOnly" in cookies["__Host-cc_session"]
    assert "HttpOnly" not in cookies["__Host-cc_csrf"]
    # the session works under its name, writes need the CSRF cookie's value
    assert (await secure_client.get("/me")).json()["email"] == email
    csrf = {"X-CSRF-Token": secure_client.cookies["__Host-cc_csrf"]}
    assert (await secure_client.patch("/me", json={"full_name": "H"}, headers=csrf)).status_code == 200
    # the plain name is not read when the cookies are Secure (anyone on plain http could have set it)
    token = secure_client.cookies["__Host-cc_session"]
    secure_client.cookies.clear()
    secure_client.cookies.set("cc_session", token, domain="gateway.test")
    assert (await secure_client.get("/me")).status_code == 401
    # logout clears both, under their names
    secure_client.cookies.set("__Host-cc_session", token, domain="gateway.test")
    response = await secure_client.post("/auth/logout", headers=csrf | {"Authorization": f"Bearer {token}"})
    assert response.status_code == 204
    cleared = set_cookies(response)
    assert set(cleared) == {"__Host-cc_session", "__Host-cc_csrf"}
    assert all("Max-Age=0" in value and "; Secure" in value for value in cleared.values())


async def test_openapi_names_the_cookie_the_gateway_sets(
    secure_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    for http, name in ((secure_client, "__Host-cc_session"), (client, "cc_session")):
        document = (await http.get("/openapi.json")).json()
        assert document["components"]["securitySchemes"]["cookieAuth"]["name"] == name
        assert f"`{name}`" in document["paths"]["/auth/login"]["post"]["description"]
    # the docs page sends the CSRF cookie's value whichever name it has
    pattern = re.search(r"document\.cookie\.match\(/(.*)/\)", openapi.DOCS_INIT)
    assert pattern is not None
    regex = re.compile(pattern.group(1).replace("\\/", "/"))
    for cookie in ("a=1; __Host-cc_csrf=abc; b=2", "cc_csrf=abc"):
        match = regex.search(cookie)
        assert match is not None
        assert match.group(1) == "abc"


async def test_plain_http_cookies_keep_the_plain_names(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/signup", json={"email": f"p-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    )
    cookies = set_cookies(response)
    assert set(cookies) == {"cc_session", "cc_csrf"}
    assert not any("Secure" in value for value in cookies.values())


async def test_request_ids_are_kept_only_when_short_and_plain(gw_fresh: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_fresh))) as client:
        for kept in ("abc", "req-1.2_X", "x" * 64):
            response = await client.get("/health", headers={"X-Request-Id": kept})
            assert response.headers["x-request-id"] == kept
        sent = {}
        for bad in ("x" * 65, "has space", "a/b", "<script>", "id\tx"):
            email = f"rid-{uuid.uuid4().hex[:8]}@example.com"
            response = await client.post(
                "/auth/signup", json={"email": email, "password": PASSWORD}, headers={"X-Request-Id": bad}
            )
            assert response.status_code == 201
            replaced = response.headers["x-request-id"]
            assert UUID.fullmatch(replaced), replaced
            sent[response.json()["id"]] = replaced
    # what reached the audit trail is the id the gateway answered with, never the client's
    with psycopg.connect(gw_fresh.admin_url) as conn:
        rows = conn.execute(
            "select row_id::bigint, request_id from audit.log_entries"
            " where table_name = 'core.users' and operation = 'INSERT' and row_id::bigint = any(%s)",
            [list(sent)],
        ).fetchall()
    assert dict(rows) == sent


async def test_metrics_count_the_purged_rows(gw_fresh: GatewayDb) -> None:
    with psycopg.connect(gw_fresh.admin_url, autocommit=True) as conn:
        user = conn.execute("insert into core.users (email) values ('m@example.com') returning id").fetchone()
        assert user is not None
        conn.execute(
            "insert into auth.sessions (jti, user_id, role, issued_at, expires_at)"
            " select gen_random_uuid(), %s, 'app_readwrite', now() - interval '3 hours',"
            " now() - interval '1 hour' from generate_series(1, 7)",
            [user[0]],
        )
    async with serve(create_app(settings_for(gw_fresh))) as client:
        before = (await client.get("/metrics")).text
        assert 'commercecore_purged_rows_total{table="auth.sessions"} 0.0' in before
        runner = jobs.Runner(gw_fresh.admin_url, [jobs.purge_expired_rows(batch_size=3)])
        try:
            assert runner.tick() == {"purge_expired_rows": "done"}
        finally:
            runner.close()
        after = (await client.get("/metrics")).text
    assert 'commercecore_purged_rows_total{table="auth.sessions"} 7.0' in after
    assert 'commercecore_purged_rows_total{table="core.idempotency_keys"} 0.0' in after
    assert "# TYPE commercecore_purged_rows_total counter" in after
