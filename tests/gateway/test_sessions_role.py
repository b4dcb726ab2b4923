"""Sessions own their role: the session row keeps the role its token was issued with, and a token whose role
claim differs is refused (401) on every path, the Stripe ones included, even when its signature is good.
In demo mode the HS256 secret is public: a customer can sign anything, and this is what stops them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.payments import PaymentService
from gateway.settings import DEMO_JWT_SECRET
from tests.gateway.conftest import PASSWORD, GatewayDb, make_admin, settings_for

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def demo_gateway(database: GatewayDb, *, secure: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as `make run` has it (the public demo secret), with its Stripe paths."""
    service = PaymentService.from_env({"COMMERCECORE_DEMO": "1"})
    settings = settings_for(database, demo=True, jwt_secret=DEMO_JWT_SECRET, cookie_secure=secure)
    app: Starlette = create_app(settings, payments=service)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        scheme = "https" if secure else "http"
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://gateway.test") as client:
            yield client


async def customer_token(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """A new customer's user and Bearer token."""
    email = f"r-{uuid.uuid4().hex[:10]}@example.com"
    user = (await client.post("/auth/signup", json={"email": email, "password": PASSWORD})).json()
    client.cookies.clear()
    response = await client.post("/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return user, response.json()["access_token"]


def resigned(token: str, **changes: Any) -> str:
    """The token's own claims (same jti, sub, exp) with `changes`, signed with the public demo secret."""
    claims = jwt.decode(token, DEMO_JWT_SECRET, algorithms=["HS256"])
    return jwt.encode({**claims, **changes}, DEMO_JWT_SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_role(database: GatewayDb, token: str) -> str:
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute("select role from auth.sessions where jti = %s", [jti]).fetchone()
    assert row is not None
    return str(row[0])


async def test_a_customer_token_re_signed_as_staff_is_401(gw_db: GatewayDb) -> None:
    async with demo_gateway(gw_db) as client:
        user, token = await customer_token(client)
        assert session_role(gw_db, token) == "app_readwrite"
        forged = resigned(token, role="app_admin")
        assert jwt.decode(forged, DEMO_JWT_SECRET, algorithms=["HS256"])["role"] == "app_admin"
        for method, path in (("GET", "/me"), ("GET", "/orders"), ("POST", f"/users/{user['id']}/role")):
            body = {"role": "app_admin"} if method == "POST" else None
            response = await client.request(method, path, json=body, headers=bearer(forged))
            assert response.status_code == 401, (path, response.text)
            assert response.json()["details"]["code"] == "session_revoked"
        # nothing was changed, and the genuine token still works
        me = await client.get("/me", headers=bearer(token))
        assert (me.status_code, me.json()["role"]) == (200, "app_readwrite")


async def test_a_re_signed_token_is_refused_on_the_stripe_paths_too(gw_db: GatewayDb) -> None:
    async with demo_gateway(gw_db) as client:
        _user, token = await customer_token(client)
        forged = resigned(token, role="app_admin")
        for action in ("refund", "checkout"):
            response = await client.post(f"/orders/999999999/{action}", headers=bearer(forged))
            assert response.status_code == 401, (action, response.text)
            assert response.json()["details"]["code"] == "session_revoked"


async def test_a_re_signed_session_cookie_is_401_and_cleared(gw_db: GatewayDb) -> None:
    async with demo_gateway(gw_db, secure=True) as client:
        email = f"r-{uuid.uuid4().hex[:10]}@example.com"
        await client.post("/auth/signup", json={"email": email, "password": PASSWORD})
        forged = resigned(client.cookies["__Host-cc_session"], role="app_admin")
        csrf = {"X-CSRF-Token": client.cookies["__Host-cc_csrf"]}
        for method, path in (("GET", "/me"), ("POST", "/orders/999999999/checkout")):
            # each 401 deletes the cookie from the jar: plant it again
            client.cookies.set("__Host-cc_session", forged, domain="gateway.test")
            response = await client.request(method, path, headers=csrf)
            assert response.status_code == 401, response.text
            assert response.json()["details"]["code"] == "session_revoked"
            cleared = response.headers["set-cookie"]
            assert cleared.startswith("__Host-cc_session=;")
            assert "Max-Age=0" in cleared
            assert "Secure" in cleared


async def test_a_role_change_revokes_the_old_sessions_and_the_new_ones_carry_the_new_role(
    gw_db: GatewayDb,
) -> None:
    async with demo_gateway(gw_db) as client:
        user, token = await customer_token(client)
        boss, _ = await customer_token(client)
        make_admin(gw_db, boss["id"])
        response = await client.post("/auth/token", json={"email": boss["email"], "password": PASSWORD})
        boss_token = response.json()["access_token"]
        promoted = await client.post(
            f"/users/{user['id']}/role", json={"role": "app_admin"}, headers=bearer(boss_token)
        )
        assert promoted.status_code == 200, promoted.text
        assert (await client.get("/me", headers=bearer(token))).status_code == 401
        response = await client.post("/auth/token", json={"email": user["email"], "password": PASSWORD})
        fresh = response.json()["access_token"]
        assert session_role(gw_db, fresh) == "app_admin"
        assert (await client.get("/me", headers=bearer(fresh))).json()["role"] == "app_admin"
        # and a re-signed customer role on the staff session is refused the same way
        assert (
            await client.get("/me", headers=bearer(resigned(fresh, role="app_readwrite")))
        ).status_code == 401


async def test_an_ended_session_at_the_refund_path_is_401(gw_db: GatewayDb) -> None:
    """The refund path checks the session in its transaction like every other path: an ended one is 401."""
    async with demo_gateway(gw_db) as client:
        staff, token = await customer_token(client)
        make_admin(gw_db, staff["id"])
        token = (
            await client.post("/auth/token", json={"email": staff["email"], "password": PASSWORD})
        ).json()["access_token"]
        assert (await client.post("/orders/999999999/refund", headers=bearer(token))).status_code == 404
        assert (await client.post("/auth/logout", headers=bearer(token))).status_code == 204
        response = await client.post("/orders/999999999/refund", headers=bearer(token))
        assert response.status_code == 401, response.text
        assert response.json()["details"]["code"] == "session_revoked"
