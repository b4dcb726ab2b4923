"""JWT security, sessions, CSRF, signup/login/token/logout and password change (the throttles are in
test_throttles.py, the session's role in test_sessions_role.py)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import create_app
from tests.gateway.conftest import (
    PASSWORD,
    SECRET,
    GatewayDb,
    bearer,
    csrf,
    gateway_of,
    serve,
    settings_for,
    signup,
)

pytestmark = pytest.mark.anyio


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _session(database: GatewayDb, user_id: int, *, expires_in: int = 3600) -> str:
    """A session row the way auth.create_session makes it; its jti."""
    jti = str(uuid.uuid4())
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(
            "select auth.create_session(%s, %s::uuid, now() + make_interval(secs => %s), 'test')",
            [user_id, jti, expires_in],
        )
    return jti


def _claims(user_id: int, session_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "role": "app_readwrite",
        "jti": session_id,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _expect_401(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.get("/me", headers=_auth(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details", "hint"}
    return body


async def test_signed_token_with_active_session_is_accepted(
    client: httpx.AsyncClient, peer: httpx.AsyncClient, gw_db: GatewayDb
) -> None:
    user = await signup(peer)
    jti = _session(gw_db, user["id"])
    token = jwt.encode(_claims(user["id"], jti), SECRET, algorithm="HS256")
    response = await client.get("/me", headers=_auth(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == user["id"]


@pytest.mark.parametrize(
    "case",
    [
        "alg_none",
        "wrong_key",
        "expired",
        "future_iat",
        "tampered_payload",
        "role_app_payments",
        "role_postgres",
        "role_missing",
        "jti_missing",
        "exp_missing",
        "sub_not_a_user_id",
        "jti_not_uuid",
        "revoked",
        "session_of_another_user",
        "unknown_session",
        "hs256_signed_with_empty_key",
        "garbage",
    ],
)
async def test_bad_tokens_are_401(
    client: httpx.AsyncClient, peer: httpx.AsyncClient, gw_db: GatewayDb, case: str
) -> None:
    other = peer
    user = await signup(other)
    jti = _session(gw_db, user["id"])
    good = _claims(user["id"], jti)
    token: str
    if case == "alg_none":
        token = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(good) + "."
    elif case == "wrong_key":
        token = jwt.encode(good, "another-secret-that-is-long-enough-0123456789", algorithm="HS256")
    elif case == "expired":
        token = jwt.encode({**good, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, SECRET)
    elif case == "future_iat":
        token = jwt.encode({**good, "iat": int(time.time()) + 300}, SECRET)
    elif case == "tampered_payload":
        header, _payload, signature = jwt.encode(good, SECRET).split(".")
        token = f"{header}.{_b64({**good, 'role': 'app_admin'})}.{signature}"
    elif case == "role_app_payments":
        token = jwt.encode({**good, "role": "app_payments"}, SECRET)
    elif case == "role_postgres":
        token = jwt.encode({**good, "role": "postgres"}, SECRET)
    elif case == "role_missing":
        token = jwt.encode(_claims(user["id"], jti, role=None), SECRET)
    elif case == "jti_missing":
        token = jwt.encode(_claims(user["id"], jti, jti=None), SECRET)
    elif case == "exp_missing":
        token = jwt.encode(_claims(user["id"], jti, exp=None), SECRET)
    elif case == "sub_not_a_user_id":
        token = jwt.encode({**good, "sub": "1 or 1=1"}, SECRET)
    elif case == "jti_not_uuid":
        token = jwt.encode({**good, "jti": "x'; drop table auth.sessions; --"}, SECRET)
    elif case == "revoked":
        with psycopg.connect(gw_db.admin_url, autocommit=True) as conn:
            conn.execute("select auth.revoke_session(%s::uuid)", [jti])
        token = jwt.encode(good, SECRET)
    elif case == "session_of_another_user":
        someone = await signup(other)
        token = jwt.encode({**good, "sub": str(someone["id"])}, SECRET)
    elif case == "unknown_session":
        token = jwt.encode({**good, "jti": str(uuid.uuid4())}, SECRET)
    elif case == "hs256_signed_with_empty_key":
        token = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(good) + ".AAAA"
    else:
        token = "not.a.jwt"
    await _expect_401(client, token)


async def test_iat_within_leeway_is_accepted(
    client: httpx.AsyncClient, peer: httpx.AsyncClient, gw_db: GatewayDb
) -> None:
    other = peer
    user = await signup(other)
    jti = _session(gw_db, user["id"])
    token = jwt.encode(_claims(user["id"], jti, iat=int(time.time()) + 10), SECRET)
    assert (await client.get("/me", headers=_auth(token))).status_code == 200


async def test_bad_token_on_a_public_endpoint_is_still_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/products", headers=_auth("garbage"))
    assert response.status_code == 401
    response = await client.get("/products", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


async def test_no_token_is_anonymous(client: httpx.AsyncClient) -> None:
    response = await client.get("/rpc/gw_echo", params={"a": "1"})
    assert response.status_code == 200
    assert response.json()["role"] == "app_readonly"
    response = await client.get("/me")
    assert response.status_code == 401


async def test_audience_is_checked_when_configured(gw_db: GatewayDb) -> None:
    app = create_app(settings_for(gw_db, jwt_audience="commercecore-api"))
    async with serve(app) as client:
        user = await signup(client)
        token = client.cookies["cc_session"]
        assert jwt.decode(token, SECRET, algorithms=["HS256"], audience="commercecore-api")["aud"]
        assert (await client.get("/me")).status_code == 200
        jti = _session(gw_db, user["id"])
        for aud in ("someone-else", None):
            claims = _claims(user["id"], jti, aud=aud)
            await _expect_401(client, jwt.encode(claims, SECRET))


async def test_rs256_tokens_and_algorithm_confusion(gw_db: GatewayDb) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    app = create_app(
        settings_for(gw_db, jwt_algorithm="RS256", jwt_private_key=private_pem, jwt_public_key=public_pem)
    )
    async with serve(app) as client:
        user = await signup(client)
        token = client.cookies["cc_session"]
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        assert (await client.get("/me")).status_code == 200
        jti = _session(gw_db, user["id"])
        # the classic confusion: an HS256 token "signed" with the public key
        import hashlib
        import hmac

        header_payload = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(_claims(user["id"], jti))
        signature = hmac.new(public_pem.encode(), header_payload.encode(), hashlib.sha256).digest()
        forged = header_payload + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        await _expect_401(client, forged)
        await _expect_401(client, jwt.encode(_claims(user["id"], jti), SECRET, algorithm="HS256"))


# -- cookies and CSRF -------------------------------------------------------------------------------------


async def test_signup_sets_session_and_csrf_cookies(client: httpx.AsyncClient, gw_db: GatewayDb) -> None:
    email = f"Cookie-{uuid.uuid4().hex[:8]}@Example.com"
    response = await client.post(
        "/auth/signup", json={"email": email, "password": PASSWORD, "full_name": "C"}
    )
    assert response.status_code == 201
    user = response.json()
    assert {"id", "email", "full_name", "role"} <= set(user)
    assert user["email"] == email.lower()
    assert user["role"] == "app_readwrite"
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("cc_session="))
    token = next(c for c in cookies if c.startswith("cc_csrf="))
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in session
    assert "HttpOnly" not in token
    assert "SameSite=Lax" in token
    assert "Secure" not in session  # cookie_secure=False in these tests
    with psycopg.connect(gw_db.admin_url) as conn:
        row = conn.execute(
            "select password_hash from auth.credentials where user_id = %s", [user["id"]]
        ).fetchone()
    assert row is not None
    assert row[0].startswith("$argon2id$")


async def test_secure_cookie_outside_demo(gw_db: GatewayDb) -> None:
    async with serve(create_app(settings_for(gw_db, cookie_secure=True))) as client:
        response = await client.post(
            "/auth/signup", json={"email": f"s-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
        )
        assert response.status_code == 201
        assert all("; Secure" in c for c in response.headers.get_list("set-cookie"))


async def test_csrf_required_for_cookie_writes(client: httpx.AsyncClient) -> None:
    await signup(client)
    assert (await client.get("/me")).status_code == 200  # reads need no token
    response = await client.patch("/me", json={"full_name": "No Header"})
    assert response.status_code == 403
    assert response.json()["details"]["code"] == "csrf_failed"
    response = await client.patch("/me", json={"full_name": "Wrong"}, headers={"X-CSRF-Token": "0" * 64})
    assert response.status_code == 403
    response = await client.patch("/me", json={"full_name": "Right"}, headers=csrf(client))
    assert response.status_code == 200
    assert response.json()["full_name"] == "Right"


async def test_csrf_cookie_of_another_session_does_not_pass(
    client: httpx.AsyncClient, peer: httpx.AsyncClient
) -> None:
    """Double submit with a planted pair: the token is bound to the session's jti."""
    attacker = peer
    await signup(attacker)
    planted = attacker.cookies["cc_csrf"]
    await signup(client)
    client.cookies.set("cc_csrf", planted)
    response = await client.patch("/me", json={"full_name": "x"}, headers={"X-CSRF-Token": planted})
    assert response.status_code == 403


async def test_bearer_writes_need_no_csrf(client: httpx.AsyncClient, peer: httpx.AsyncClient) -> None:
    other = peer
    user = await signup(other)
    headers = await bearer(client, user["email"])
    response = await client.patch("/me", json={"full_name": "Bearer"}, headers=headers)
    assert response.status_code == 200, response.text


# -- login, token, logout ----------------------------------------------------------------------------------


async def test_login_returns_user_and_cookies(client: httpx.AsyncClient, peer: httpx.AsyncClient) -> None:
    other = peer
    user = await signup(other)
    response = await client.post("/auth/login", json={"email": user["email"].upper(), "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == user["id"]
    assert response.json()["full_name"] == "Test"
    assert client.cookies.get("cc_session")
    assert client.cookies.get("cc_csrf")
    assert (await client.get("/me")).json()["id"] == user["id"]


async def test_token_endpoint(client: httpx.AsyncClient, peer: httpx.AsyncClient) -> None:
    other = peer
    user = await signup(other)
    response = await client.post("/auth/token", json={"email": user["email"], "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert "set-cookie" not in response.headers
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(user["id"])
    assert claims["role"] == "app_readwrite"
    assert {"exp", "iat", "jti"} <= set(claims)
    me = await client.get("/me", headers=_auth(body["access_token"]))
    assert me.json()["id"] == user["id"]


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, peer: httpx.AsyncClient
) -> None:
    other = peer
    user = await signup(other)
    gateway = gateway_of(client)
    verified: list[str | None] = []
    original = gateway.auth.passwords.verify

    async def counting(stored_hash: str | None, password: str) -> bool:
        verified.append(stored_hash)
        return await original(stored_hash, password)

    gateway.auth.passwords.verify = counting  # type: ignore[method-assign]
    wrong = await client.post("/auth/login", json={"email": user["email"], "password": "wrong password!"})
    unknown = await client.post(
        "/auth/login", json={"email": "nobody-" + user["email"], "password": "whatever12"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    # the unknown address was verified too (against the dummy hash), so both take as long
    assert len(verified) == 2
    assert verified[1] is None


async def test_logout_revokes_the_session(client: httpx.AsyncClient) -> None:
    await signup(client)
    token = client.cookies["cc_session"]
    response = await client.post("/auth/logout", headers=csrf(client))
    assert response.status_code == 204
    cleared = response.headers.get_list("set-cookie")
    assert any(c.startswith("cc_session=;") and "Max-Age=0" in c for c in cleared)
    assert any(c.startswith("cc_csrf=;") for c in cleared)
    await _expect_401(client, token)
    # logging out again (no cookie any more) is harmless
    assert (await client.post("/auth/logout")).status_code == 204


async def test_logout_by_cookie_needs_csrf(client: httpx.AsyncClient) -> None:
    await signup(client)
    assert (await client.post("/auth/logout")).status_code == 403
    assert (await client.get("/me")).status_code == 200


async def test_revoked_cookie_is_cleared(client: httpx.AsyncClient, peer: httpx.AsyncClient) -> None:
    await signup(client)
    token = client.cookies["cc_session"]
    bearer_client = peer
    await bearer_client.post("/auth/logout", headers=_auth(token))
    response = await client.get("/me")
    assert response.status_code == 401
    assert response.json()["details"]["code"] == "session_revoked"
    assert "cc_session=;" in response.headers["set-cookie"]


# -- signup validation -------------------------------------------------------------------------------------


async def test_signup_errors(client: httpx.AsyncClient, peer: httpx.AsyncClient) -> None:
    user = await signup(peer)
    duplicate = await client.post("/auth/signup", json={"email": user["email"], "password": PASSWORD})
    assert duplicate.status_code == 409
    assert duplicate.json()["details"]["code"] == "email_taken"
    short = await client.post("/auth/signup", json={"email": "short@example.com", "password": "123456789"})
    assert short.status_code == 422
    assert short.json()["details"]["field"] == "password"
    bad_email = await client.post("/auth/signup", json={"email": "not-an-email", "password": PASSWORD})
    assert bad_email.status_code == 422
    assert bad_email.json()["details"]["field"] == "email"
    extra = await client.post(
        "/auth/signup", json={"email": "x@example.com", "password": PASSWORD, "role": "app_admin"}
    )
    assert extra.status_code == 400
    assert extra.json()["details"] == {"code": "unknown_argument", "field": "role"}
    malformed = await client.post(
        "/auth/signup", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "PGRST102"


# -- password change ---------------------------------------------------------------------------------------


async def test_password_change_revokes_every_session(
    client: httpx.AsyncClient, peer: httpx.AsyncClient
) -> None:
    user = await signup(client)
    other_device = await bearer(peer, user["email"])
    old_cookie = client.cookies["cc_session"]
    new_password = "a much better passphrase"
    wrong = await client.post(
        "/me/password",
        json={"current_password": "not it at all", "new_password": new_password},
        headers=csrf(client),
    )
    assert wrong.status_code == 403
    short = await client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=csrf(client)
    )
    assert short.status_code == 422
    assert short.json()["details"]["field"] == "new_password"
    no_csrf = await client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": new_password}
    )
    assert no_csrf.status_code == 403
    changed = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=csrf(client),
    )
    assert changed.status_code == 200, changed.text
    assert "access_token" not in changed.json()
    assert client.cookies["cc_session"] != old_cookie
    assert (await client.get("/me")).status_code == 200  # the new cookie works
    await _expect_401(client, old_cookie)
    assert (await client.get("/me", headers=other_device)).status_code == 401
    login_old = await client.post("/auth/token", json={"email": user["email"], "password": PASSWORD})
    assert login_old.status_code == 401
    login_new = await client.post("/auth/token", json={"email": user["email"], "password": new_password})
    assert login_new.status_code == 200


async def test_password_change_with_bearer_returns_a_new_token(
    client: httpx.AsyncClient, peer: httpx.AsyncClient
) -> None:
    user = await signup(peer)
    headers = await bearer(client, user["email"])
    response = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "another good one"},
        headers=headers,
    )
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert (await client.get("/me", headers=_auth(token))).status_code == 200
    assert (await client.get("/me", headers=headers)).status_code == 401


async def test_password_change_needs_a_session(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": "x" * 12}
    )
    assert response.status_code == 401


async def test_login_upgrades_a_hash_made_with_older_argon2_parameters(gw_db: GatewayDb) -> None:
    email = f"old-hash-{uuid.uuid4().hex[:8]}@example.com"
    # signed up while the gateway hashed with weaker parameters
    async with serve(create_app(settings_for(gw_db, argon2_memory_kib=512))) as old:
        user = await signup(old, email)
        old_session = await bearer(old, email)

    def stored() -> str:
        with psycopg.connect(gw_db.admin_url) as conn:
            row = conn.execute(
                "select password_hash from auth.credentials where user_id = %s", [user["id"]]
            ).fetchone()
        assert row is not None
        return str(row[0])

    before = stored()
    assert "m=512," in before
    async with serve(create_app(settings_for(gw_db))) as current:
        await bearer(current, email)
        after = stored()
        assert "m=1024," in after
        # the same password, now under the current parameters: still accepted, nothing rehashed again
        await bearer(current, email)
        assert stored() == after
        # not a password change: the sessions stay
        assert (await current.get("/me", headers=old_session)).status_code == 200
