"""The stock-hoarding attack, replayed over HTTP against the gateway with its Stripe paths (the stand-in).

A fresh account orders as much as it can, until it is refused, then keeps its orders alive the way it could
before: a new checkout attempt on every order every "25 minutes" (the clock is moved by shifting the orders'
and attempts' timestamps back in SQL), with the expiry job (`jobs run`) running in between. It holds at most
the limits (COMMERCECORE_MAX_OPEN_ORDERS unpaid orders, COMMERCECORE_MAX_UNITS_PER_PRODUCT units of a
product) and loses everything at ORDER_MAX_UNPAID_AGE from the orders' creation; a normal customer's order
succeeds all along.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from commercecore.ops import jobs
from commercecore.standin import BackgroundServer, start_standin
from gateway.app import create_app
from gateway.payments import PaymentService, PaymentSettings
from gateway.settings import Settings
from tests.gateway.conftest import GatewayDb, bearer, make_admin, serve, settings_for, signup

WEBHOOK_SECRET = "whsec_" + uuid.uuid4().hex
STOCK = 1000
STEP = "25 minutes"


@pytest.fixture(scope="module")
def standin() -> Iterator[BackgroundServer]:
    server, _ = start_standin(webhook_secret=WEBHOOK_SECRET)
    try:
        yield server
    finally:
        server.stop()


def payment_service(standin: BackgroundServer) -> PaymentService:
    """The Stripe paths as `commercecore serve` builds them: the gateway runs them on its own pool, with the
    shop's settings in every transaction."""
    api_key = f"sk_test_{uuid.uuid4().hex}"
    payment_settings = PaymentSettings(
        secret_key=api_key,
        webhook_secret=WEBHOOK_SECRET,
        api_base=standin.url,
        public_base_url="http://shop.test",
        max_network_retries=0,
        timeout=10.0,
    )
    return PaymentService(payment_settings)


@pytest.fixture
async def shop(
    standin: BackgroundServer, gw_fresh: GatewayDb
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = settings_for(gw_fresh)
    app = create_app(settings, payments=payment_service(standin))
    async with serve(app) as client:
        yield client, settings


def sql(database: GatewayDb, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def new_product(database: GatewayDb, sku: str) -> int:
    product_id = int(
        sql(
            database,
            "insert into core.products (sku, name, price_minor) values (%s, %s, 500) returning id",
            [sku, sku],
        )[0][0]
    )
    sql(
        database,
        "insert into core.inventory_movements (product_id, delta, reason) values (%s, %s, 'restock')",
        [product_id, STOCK],
    )
    return product_id


def holding(database: GatewayDb, user_id: int) -> tuple[int, dict[int, int]]:
    """The account's unpaid orders and the units they hold per product."""
    rows = sql(
        database,
        "select o.id, i.product_id, i.quantity from core.orders as o"
        " join core.order_items as i on i.order_id = o.id where o.user_id = %s and o.status = 'pending'",
        [user_id],
    )
    units: dict[int, int] = {}
    for _order, product, quantity in rows:
        units[product] = units.get(product, 0) + quantity
    return len({row[0] for row in rows}), units


def stock(database: GatewayDb, product_id: int) -> int:
    return int(sql(database, "select stock from core.products where id = %s", [product_id])[0][0])


def time_passes(database: GatewayDb, user_id: int) -> None:
    """STEP later: the account's orders and their attempts (and sessions) are older by STEP."""
    sql(
        database,
        "update core.orders set created_at = created_at - %s::interval where user_id = %s",
        [STEP, user_id],
    )
    sql(
        database,
        "update core.payments set created_at = created_at - %s::interval,"
        " expires_at = expires_at - %s::interval where user_id = %s",
        [STEP, STEP, user_id],
    )


def run_expiry_job(database: GatewayDb, settings: Settings) -> int:
    """The expiry job of `commercecore jobs run` (ttl 30min, the gateway's maximum age)."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        result = jobs.expire_unpaid_orders("30min", settings.order_max_unpaid_age).run(conn)
    return int(result["expired"])


async def order(client: httpx.AsyncClient, auth: dict[str, str], *lines: tuple[int, int]) -> httpx.Response:
    body = {"items": [{"product_id": product, "quantity": quantity} for product, quantity in lines]}
    return await client.post("/orders", json=body, headers=auth)


@pytest.mark.anyio
async def test_a_hoarding_account_holds_at_most_the_limits_and_loses_them_at_the_maximum_age(
    shop: tuple[httpx.AsyncClient, Settings], gw_fresh: GatewayDb
) -> None:
    client, settings = shop
    target = new_product(gw_fresh, "HOARD-TARGET")
    others = [new_product(gw_fresh, f"HOARD-{n}") for n in range(8)]
    attacker = await signup(client)
    auth = await bearer(client, attacker["email"])
    customer = await signup(client)
    customer_auth = await bearer(client, customer["email"])

    # the whole stock in one order, as before: refused, with the limit and what is left of it
    greedy = await order(client, auth, (target, STOCK))
    assert greedy.status_code == 409, greedy.text
    error = greedy.json()
    assert error["details"]["code"] == "per_customer_limit"
    assert (error["details"]["limit"], error["details"]["remaining"]) == (100, 100)
    assert error["hint"]
    # then order until refused: the most the limit allows of the target, then one order after another
    placed = [await order(client, auth, (target, 100))]
    assert (await order(client, auth, (target, 1))).json()["details"]["code"] == "per_customer_limit"
    refusal: httpx.Response | None = None
    for product in others:
        response = await order(client, auth, (product, 100))
        if response.status_code != 201:
            refusal = response
            break
        placed.append(response)
    assert refusal is not None
    assert refusal.status_code == 409, refusal.text
    assert refusal.json()["details"] == {"code": "too_many_open_orders", "limit": 5, "open_orders": 5}
    assert refusal.json()["hint"]
    assert holding(gw_fresh, attacker["id"]) == (5, {target: 100, **{p: 100 for p in others[:4]}})
    assert stock(gw_fresh, target) == STOCK - 100

    # keep them alive: a new checkout attempt on every order every 25 minutes, the expiry job in between
    order_ids = [response.json()["id"] for response in placed]
    for minutes in (0, 25, 50):
        for order_id in order_ids:
            checkout = await client.post(f"/orders/{order_id}/checkout", headers=auth)
            assert checkout.status_code == 201, (minutes, checkout.text)
        assert run_expiry_job(gw_fresh, settings) == 0, minutes
        assert holding(gw_fresh, attacker["id"])[0] == 5
        # a normal customer buys all along
        bought = await order(client, customer_auth, (target, 2))
        assert bought.status_code == 201, bought.text
        time_passes(gw_fresh, attacker["id"])

    # 75 minutes after the orders were placed: past the maximum age, however fresh the attempts
    for order_id in order_ids:
        late = await client.post(f"/orders/{order_id}/checkout", headers=auth)
        assert late.status_code == 409, late.text
        assert late.json()["details"]["code"] == "order_expired"
        assert late.json()["details"]["max_age_seconds"] == 3600
    assert run_expiry_job(gw_fresh, settings) == 5
    assert holding(gw_fresh, attacker["id"]) == (0, {})
    assert stock(gw_fresh, target) == STOCK - 3 * 2  # only the normal customer's units are gone
    assert {stock(gw_fresh, p) for p in others} == {STOCK}
    attempts = sql(
        gw_fresh,
        "select status, count(*) from core.payments where user_id = %s group by status order by status",
        [attacker["id"]],
    )
    # every attempt ended: the superseded ones when the next began, the last ones with their orders
    assert {status for status, _count in attempts} <= {"canceled", "expired"}
    assert sum(count for _status, count in attempts) == 5 * 3


@pytest.mark.anyio
async def test_the_limits_come_from_the_gateways_settings_and_the_products_own(gw_fresh: GatewayDb) -> None:
    settings = settings_for(gw_fresh, max_open_orders=2, max_units_per_product=3)
    mug, lamp, console = (new_product(gw_fresh, sku) for sku in ("LIM-MUG", "LIM-LAMP", "LIM-CONSOLE"))
    async with serve(create_app(settings)) as client:
        buyer = await signup(client)
        auth = await bearer(client, buyer["email"])
        assert (await order(client, auth, (mug, 3))).status_code == 201
        over = await order(client, auth, (mug, 1))
        assert over.status_code == 409
        assert (over.json()["details"]["code"], over.json()["details"]["limit"]) == ("per_customer_limit", 3)
        assert (await order(client, auth, (lamp, 1))).status_code == 201
        third = await order(client, auth, (console, 1))
        assert third.json()["details"] == {"code": "too_many_open_orders", "limit": 2, "open_orders": 2}

        # staff set a product's own limit through the product routes; it wins over the shop's
        staff = await signup(client)
        make_admin(gw_fresh, staff["id"])
        staff_auth = await bearer(client, staff["email"])
        patched = await client.patch(f"/products/{console}", json={"max_per_customer": 1}, headers=staff_auth)
        assert patched.status_code == 200, patched.text
        assert patched.json()["max_per_customer"] == 1
        assert (await client.get(f"/products/{console}")).json()["max_per_customer"] == 1
        other = await signup(client)
        other_auth = await bearer(client, other["email"])
        two = await order(client, other_auth, (console, 2))
        assert (two.json()["details"]["code"], two.json()["details"]["limit"]) == ("per_customer_limit", 1)
        bad = await client.patch(f"/products/{console}", json={"max_per_customer": 0}, headers=staff_auth)
        assert (bad.status_code, bad.json()["details"]["field"]) == (422, "max_per_customer")
        refused = await client.patch(
            f"/products/{console}", json={"max_per_customer": 50}, headers=other_auth
        )
        assert refused.status_code == 403, refused.text  # customers cannot change their own limits
