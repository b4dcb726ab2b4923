"""Throttles that protect users instead of locking them out: failed logins delay one (address, client) pair
and never the account; X-Forwarded-For names the client only when a trusted proxy sends it; signup, login,
token, password change, checkout and refund each have a budget per client and per account, 429 with
Retry-After and the budget in `details` once it is spent.

Clients at given addresses are ASGI clients whose connection comes from that address (the scope's
`client`), as uvicorn reports a TCP peer."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.payments import PaymentService
from gateway.settings import RATE_DEFAULTS, RATES_OFF
from tests.gateway.conftest import PASSWORD, GatewayDb, make_admin, settings_for

pytestmark = pytest.mark.anyio

WRONG = "not the password"


@contextlib.asynccontextmanager
async def running(database: GatewayDb, **overrides: Any) -> AsyncIterator[Starlette]:
    app = create_app(settings_for(database, **overrides))
    async with app.router.lifespan_context(app):
        yield app


def client_at(app: Starlette, address: str) -> httpx.AsyncClient:
    """A client of `app` whose connection comes from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


def rates(**budgets: str) -> dict[str, str]:
    """Every budget off but the ones named (action_scope="N/period")."""
    return {**RATES_OFF, **budgets}


async def new_customer(app: Starlette) -> str:
    email = f"t-{uuid.uuid4().hex[:10]}@example.com"
    async with client_at(app, "198.51.100.250") as client:
        response = await client.post("/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return email


async def login(
    client: httpx.AsyncClient, email: str, password: str, path: str = "/auth/login"
) -> httpx.Response:
    return await client.post(path, json={"email": email, "password": password})


def failures_of(database: GatewayDb, email: str) -> dict[str, int]:
    """client -> failures in a row, for one address (what auth.login_failures keeps)."""
    with psycopg.connect(database.admin_url) as conn:
        rows = conn.execute(
            "select host(client), failed_attempts from auth.login_failures"
            " where email_hash = sha256(convert_to(%s, 'UTF8'))",
            [email],
        ).fetchall()
    return {str(client): int(count) for client, count in rows}


def end_delays(database: GatewayDb, email: str) -> None:
    """The delays of `email` run out (moved into the past, instead of waiting them out)."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(
            "update auth.login_failures set retry_at = now() - interval '1 second'"
            " where email_hash = sha256(convert_to(%s, 'UTF8')) and retry_at is not null",
            [email],
        )


def assert_429(response: httpx.Response, code: str, **details: Any) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    body: dict[str, Any] = response.json()
    assert body["details"]["code"] == code
    assert {key: body["details"][key] for key in details} == details
    retry_after = int(response.headers["retry-after"])
    assert retry_after == body["details"]["retry_after"]
    assert retry_after >= 1
    return body


# -- login failures: a delay per (address, client), never a lock ---------------------------------------------


async def test_twenty_wrong_passwords_then_the_owner_from_another_address_signs_in_at_once(
    gw_db: GatewayDb,
) -> None:
    # the shipped defaults: 3 free attempts, 5 s doubling up to 15 min, every budget on
    async with running(gw_db, rate_limits=RATE_DEFAULTS) as app:
        email = await new_customer(app)
        async with client_at(app, "127.0.0.1") as attacker:
            statuses = [(await login(attacker, email, WRONG)).status_code for _ in range(20)]
            assert statuses == [401] * 3 + [429] * 17
            delayed = await login(attacker, email, PASSWORD)
            assert_429(
                delayed, "too_many_attempts", free_attempts=3, delay_base_seconds=5, delay_max_seconds=900
            )
            assert int(delayed.headers["retry-after"]) <= 5
        async with client_at(app, "127.0.0.2") as owner:
            response = await login(owner, email, PASSWORD)
            assert response.status_code == 200, response.text
            assert response.json()["email"] == email
            assert owner.cookies.get("cc_session")
    # the refused attempts were never checked nor counted: three failures, all from the attacker
    assert failures_of(gw_db, email) == {"127.0.0.1": 3}


async def test_the_delay_doubles_per_failure_and_a_success_after_it_clears_the_pair(gw_db: GatewayDb) -> None:
    async with running(gw_db) as app:
        email = await new_customer(app)
        async with client_at(app, "192.0.2.20") as client:
            answers = [(await login(client, email, WRONG)).json()["details"] for _ in range(3)]
            assert [a.get("retry_after") for a in answers] == [None, None, 5]
            end_delays(gw_db, email)
            assert (await login(client, email, WRONG)).json()["details"]["retry_after"] == 10
            end_delays(gw_db, email)
            assert (await login(client, email, WRONG)).json()["details"]["retry_after"] == 20
            assert_429(await login(client, email, PASSWORD), "too_many_attempts")
            end_delays(gw_db, email)
            assert (await login(client, email, PASSWORD)).status_code == 200
    assert failures_of(gw_db, email) == {}


async def test_unknown_addresses_are_delayed_the_same_way(gw_db: GatewayDb) -> None:
    async with running(gw_db) as app:
        known = await new_customer(app)
        unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
        async with client_at(app, "192.0.2.21") as client:
            answers = {}
            for email in (known, unknown):
                responses = [await login(client, email, WRONG) for _ in range(5)]
                answers[email] = [(r.status_code, r.json()["details"]) for r in responses]
    assert answers[known] == answers[unknown]


async def test_a_wrong_current_password_counts_as_a_failed_login(gw_db: GatewayDb) -> None:
    async with running(gw_db, login_free_attempts=1) as app:
        email = await new_customer(app)
        async with client_at(app, "192.0.2.22") as client:
            token = (await login(client, email, PASSWORD, "/auth/token")).json()["access_token"]
            change = {"current_password": WRONG, "new_password": "another long passphrase"}
            headers = {"Authorization": f"Bearer {token}"}
            first = await client.post("/me/password", json=change, headers=headers)
            assert first.status_code == 403
            assert first.json()["details"]["retry_after"] == 5
            assert_429(await client.post("/me/password", json=change, headers=headers), "too_many_attempts")
            assert_429(await login(client, email, PASSWORD), "too_many_attempts")
        async with client_at(app, "192.0.2.23") as elsewhere:
            assert (await login(elsewhere, email, PASSWORD)).status_code == 200


# -- the client address: X-Forwarded-For from trusted proxies only -------------------------------------------


async def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy(gw_db: GatewayDb) -> None:
    async with running(gw_db, trusted_proxies=("192.0.2.0/28",), login_free_attempts=1) as app:
        email = await new_customer(app)
        async with client_at(app, "192.0.2.5") as proxy:
            # two clients behind the proxy are two clients: one's delay does not hold the other
            first = await proxy.post(
                "/auth/login",
                json={"email": email, "password": WRONG},
                headers={"X-Forwarded-For": "203.0.113.7"},
            )
            assert first.status_code == 401
            delayed = await proxy.post(
                "/auth/login",
                json={"email": email, "password": PASSWORD},
                headers={"X-Forwarded-For": "203.0.113.7"},
            )
            assert_429(delayed, "too_many_attempts")
            other = await proxy.post(
                "/auth/login",
                json={"email": email, "password": PASSWORD},
                headers={"X-Forwarded-For": "203.0.113.8"},
            )
            assert other.status_code == 200
            # what a client wrote itself stays left of what the proxy appended: the proxy's entry counts
            await proxy.post(
                "/auth/login",
                json={"email": email, "password": WRONG},
                headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
            )
        async with client_at(app, "198.51.100.66") as direct:
            # an untrusted peer's X-Forwarded-For is ignored, whatever it says each time
            for n in range(3):
                await direct.post(
                    "/auth/login",
                    json={"email": email, "password": WRONG},
                    headers={"X-Forwarded-For": f"203.0.113.{100 + n}"},
                )
    assert failures_of(gw_db, email) == {"203.0.113.7": 1, "203.0.113.9": 1, "198.51.100.66": 1}


async def test_ipv6_clients_count_by_their_64_network(gw_db: GatewayDb) -> None:
    async with running(gw_db, login_free_attempts=1) as app:
        email = await new_customer(app)
        async with client_at(app, "2001:db8:1:2::1") as first:
            assert (await login(first, email, WRONG)).status_code == 401
        async with client_at(app, "2001:db8:1:2:ffff::9") as same_network:
            assert_429(await login(same_network, email, PASSWORD), "too_many_attempts")
        async with client_at(app, "2001:db8:1:3::1") as next_network:
            assert (await login(next_network, email, PASSWORD)).status_code == 200
    assert failures_of(gw_db, email) == {"2001:db8:1:2::": 1}


# -- budgets per action, client and account ------------------------------------------------------------------


async def test_signup_budgets(gw_db: GatewayDb) -> None:
    async with running(gw_db, rate_limits=rates(signup_client="2/minute", signup_account="1/hour")) as app:
        async with client_at(app, "192.0.2.30") as client:
            for _ in range(2):
                email = f"s-{uuid.uuid4().hex[:8]}@example.com"
                response = await client.post("/auth/signup", json={"email": email, "password": PASSWORD})
                assert response.status_code == 201
            response = await client.post(
                "/auth/signup", json={"email": f"s-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
            )
            body = assert_429(
                response, "rate_limited", action="signup", scope="client", limit=2, period_seconds=60
            )
            assert body["details"]["retry_after"] <= 60
        async with client_at(app, "192.0.2.31") as other:
            # another client has its own budget; one address has its own too, wherever it comes from
            taken = f"s-{uuid.uuid4().hex[:8]}@example.com"
            assert (
                await other.post("/auth/signup", json={"email": taken, "password": PASSWORD})
            ).status_code == 201
        async with client_at(app, "192.0.2.32") as third:
            again = await third.post("/auth/signup", json={"email": taken.upper(), "password": PASSWORD})
            assert_429(again, "rate_limited", action="signup", scope="account", limit=1, period_seconds=3600)


@pytest.mark.parametrize("path", ["/auth/login", "/auth/token"])
async def test_login_and_token_client_budget(gw_db: GatewayDb, path: str) -> None:
    action = path.rsplit("/", 1)[1]
    async with running(gw_db, rate_limits=rates(**{f"{action}_client": "2/minute"})) as app:
        email = await new_customer(app)
        async with client_at(app, "192.0.2.40") as client:
            assert [(await login(client, email, PASSWORD, path)).status_code for _ in range(2)] == [200, 200]
            response = await login(client, email, PASSWORD, path)
            assert_429(response, "rate_limited", action=action, scope="client", limit=2, period_seconds=60)
        async with client_at(app, "192.0.2.41") as other:
            assert (await login(other, email, PASSWORD, path)).status_code == 200


@pytest.mark.parametrize("path", ["/auth/login", "/auth/token"])
async def test_login_and_token_account_budget_spares_clients_without_failures(
    gw_db: GatewayDb, path: str
) -> None:
    action = path.rsplit("/", 1)[1]
    budget = rates(**{f"{action}_account": "3/minute"})
    async with running(gw_db, rate_limits=budget, login_free_attempts=100) as app:
        email = await new_customer(app)
        guessers = [client_at(app, f"203.0.113.{n}") for n in range(1, 5)]
        try:
            # a first try from each address is free; the next ones spend the account's budget
            assert [(await login(g, email, WRONG, path)).status_code for g in guessers] == [401] * 4
            again = [(await login(g, email, WRONG, path)).status_code for g in guessers]
            assert again == [401, 401, 401, 429]
            response = await login(guessers[0], email, PASSWORD, path)
            assert_429(response, "rate_limited", action=action, scope="account", limit=3, period_seconds=60)
        finally:
            for guesser in guessers:
                await guesser.aclose()
        async with client_at(app, "192.0.2.42") as owner:
            assert (await login(owner, email, PASSWORD, path)).status_code == 200


async def test_password_change_budgets(gw_db: GatewayDb) -> None:
    budget = rates(password_client="2/minute", password_account="3/minute")
    async with running(gw_db, rate_limits=budget, login_free_attempts=100) as app:
        email = await new_customer(app)
        async with client_at(app, "192.0.2.50") as client:
            token = (await login(client, email, PASSWORD, "/auth/token")).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            change = {"current_password": WRONG, "new_password": "another long passphrase"}
            statuses = [
                (await client.post("/me/password", json=change, headers=headers)).status_code
                for _ in range(2)
            ]
            assert statuses == [403, 403]
            response = await client.post("/me/password", json=change, headers=headers)
            assert_429(response, "rate_limited", action="password", scope="client", limit=2)
        async with client_at(app, "192.0.2.51") as other:
            assert (await other.post("/me/password", json=change, headers=headers)).status_code == 403
        async with client_at(app, "192.0.2.52") as third:
            response = await third.post("/me/password", json=change, headers=headers)
            assert_429(response, "rate_limited", action="password", scope="account", limit=3)


@contextlib.asynccontextmanager
async def paying(database: GatewayDb, **budgets: str) -> AsyncIterator[Starlette]:
    """The gateway with its Stripe paths (demo settings: the refusals tested here never reach Stripe)."""
    service = PaymentService.from_env({"COMMERCECORE_DEMO": "1"})
    app = create_app(settings_for(database, rate_limits=rates(**budgets)), payments=service)
    async with app.router.lifespan_context(app):
        yield app


async def bearer_of(app: Starlette, email: str) -> dict[str, str]:
    async with client_at(app, "198.51.100.251") as client:
        response = await login(client, email, PASSWORD, "/auth/token")
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.mark.parametrize("action", ["checkout", "refund"])
async def test_checkout_and_refund_budgets(gw_db: GatewayDb, action: str) -> None:
    async with paying(gw_db, **{f"{action}_client": "2/minute", f"{action}_account": "3/minute"}) as app:
        email = await new_customer(app)
        if action == "refund":
            with psycopg.connect(gw_db.admin_url) as conn:
                row = conn.execute("select id from core.users where email = %s", [email]).fetchone()
            assert row is not None
            make_admin(gw_db, int(row[0]))
        headers = await bearer_of(app, email)
        path = (
            f"/orders/999999999/{action}"  # no such order: each request is a cheap 404 until the budget ends
        )
        async with client_at(app, "192.0.2.60") as client:
            assert [(await client.post(path, headers=headers)).status_code for _ in range(2)] == [404, 404]
            response = await client.post(path, headers=headers)
            assert_429(response, "rate_limited", action=action, scope="client", limit=2, period_seconds=60)
        async with client_at(app, "192.0.2.61") as other:
            assert (await other.post(path, headers=headers)).status_code == 404
            response = await other.post(path, headers=headers)
            assert_429(response, "rate_limited", action=action, scope="account", limit=3, period_seconds=60)
