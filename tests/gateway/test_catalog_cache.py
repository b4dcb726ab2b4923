"""Conditional requests and the catalog cache, against the real database: ETags and 304, the caching
headers of anonymous and signed-in reads, the catalog cache kept true by the catalog's notifications (on
two gateways at once), stock coalesced within its staleness bound, nothing of a signed-in caller ever served
to anyone else, the listener's loss and return, and the bound in bytes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest

from gateway import conditional
from gateway.app import create_app
from gateway.catalog_cache import CatalogCache, CatalogListener
from gateway.settings import CatalogCacheLimits, Settings, SettingsError
from tests.gateway.conftest import GatewayDb, bearer, gateway_of, make_admin, serve, settings_for, signup

pytestmark = pytest.mark.anyio

# how long the listener may take to connect and see its probe (a fresh clone, a loaded machine)
LISTENING = 10.0


def cached(database: GatewayDb, **limits: Any) -> Settings:
    return settings_for(database, catalog=CatalogCacheLimits(**limits))


async def until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Polls a state of the gateway or the database until it holds; the seconds it took."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def cache_of(client: httpx.AsyncClient) -> CatalogCache:
    return gateway_of(client).catalog


def listener_of(client: httpx.AsyncClient) -> CatalogListener:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app: Any = transport.app
    listener: CatalogListener = app.state.catalog_listener
    return listener


async def live(client: httpx.AsyncClient) -> None:
    cache = cache_of(client)

    async def connected() -> bool:
        return cache.live

    await until(connected, LISTENING, "the catalog listener")


async def metric(client: httpx.AsyncClient, name: str, labels: str = "") -> float:
    """A sample of /metrics (0 when absent)."""
    text = (await client.get("/metrics")).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def hits(client: httpx.AsyncClient) -> float:
    return await metric(client, "commercecore_catalog_cache_hits_total")


def admin_sql(database: GatewayDb, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def product_id(database: GatewayDb, sku: str) -> int:
    return int(admin_sql(database, "select id from core.products where sku = %s", [sku])[0][0])


@pytest.fixture
async def shop(gw_fresh: GatewayDb) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with the catalog cache on (the defaults), listening, on its own clone."""
    async with serve(create_app(cached(gw_fresh))) as client:
        await live(client)
        yield client


# -- conditional requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_bytes", [0, 1024 * 1024], ids=["uncached", "cached"])
async def test_an_etag_round_trip_answers_304_until_the_resource_changes(
    gw_fresh: GatewayDb, cache_bytes: int
) -> None:
    async with serve(create_app(cached(gw_fresh, max_bytes=cache_bytes))) as client:
        if cache_bytes:
            await live(client)
        first = await client.get("/categories")
        assert first.status_code == 200
        tag = first.headers["etag"]
        assert tag == conditional.entity_tag(first.content)
        assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
        assert first.headers["cache-control"] == "public, max-age=0, must-revalidate"
        assert first.headers["vary"] == "Authorization, Cookie"
        for header in (tag, f"W/{tag}", f'"other", {tag}', "*", f' "x" ,W/{tag} '):
            again = await client.get("/categories", headers={"If-None-Match": header})
            assert again.status_code == 304, header
            assert again.content == b""
            assert again.headers["etag"] == tag
            assert again.headers["cache-control"] == "public, max-age=0, must-revalidate"
            assert again.headers["vary"] == "Authorization, Cookie"
        assert (await client.get("/categories", headers={"If-None-Match": '"other"'})).status_code == 200
        head = await client.head("/categories")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["etag"] == tag
        assert head.headers["content-length"] == str(len(first.content))
        assert (await client.head("/categories", headers={"If-None-Match": tag})).status_code == 304

        admin_sql(gw_fresh, "update core.categories set name = 'Boots' where slug = 'shoes'")

        async def changed() -> bool:
            return (await client.get("/categories", headers={"If-None-Match": tag})).status_code == 200

        await until(changed, 2.0, "the changed categories")
        fresh = await client.get("/categories", headers={"If-None-Match": tag})
        assert "Boots" in fresh.text
        assert fresh.headers["etag"] not in (tag, None)


async def test_writes_carry_no_tag_and_never_answer_304(shop: httpx.AsyncClient) -> None:
    write = await shop.post("/rpc/gw_echo", json={"a": 1}, headers={"If-None-Match": "*"})
    assert write.status_code == 200
    assert "etag" not in write.headers
    call = await shop.post("/rpc/search_products", json={"q": "hat"}, headers={"If-None-Match": "*"})
    assert call.status_code == 200
    assert "etag" not in call.headers


async def test_signed_in_responses_are_private_and_never_stored(
    shop: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    first = product_id(gw_fresh, "SKU-001")
    user = await signup(shop)  # a cookie session from here on
    by_cookie = await shop.get(f"/products/{first}")
    assert by_cookie.headers["cache-control"] == "private, no-store"
    assert by_cookie.headers["vary"] == "Authorization, Cookie"
    assert by_cookie.headers["etag"] == conditional.entity_tag(by_cookie.content)
    async with httpx.AsyncClient(transport=shop._transport, base_url="http://gateway.test") as other:
        token = await bearer(other, user["email"])
        by_token = await other.get("/categories", headers=token)
        assert by_token.headers["cache-control"] == "private, no-store"
        tag = by_token.headers["etag"]
        assert (await other.get("/categories", headers={**token, "If-None-Match": tag})).status_code == 304


# -- the catalog cache ---------------------------------------------------------------------------------


async def test_a_repeated_read_is_a_hit_whatever_the_order_of_its_parameters(shop: httpx.AsyncClient) -> None:
    pairs = [
        ("/products?limit=5&order=id&price_minor=gt.100", "/products?price_minor=gt.100&order=id&limit=5"),
        ("/products?select=*&id=lt.4&id=gt.1", "/products?id=gt.1&id=lt.4"),
        ("/rpc/search_products?q=hat", "/rpc/search_products?limit=20&q=hat&offset=0"),
        ("/categories?or=(slug.eq.shoes,slug.eq.hats)", "/categories?or=(slug.eq.hats,slug.eq.shoes)"),
    ]
    for first, second in pairs:
        filled = await shop.get(first)
        assert filled.status_code == 200, filled.text
        before = await hits(shop)
        served = await shop.get(second)
        assert served.status_code == 200
        assert served.content == filled.content
        assert await hits(shop) == before + 1, second
    # what changes the body is part of the key: a limit, one object rather than an array
    before = await hits(shop)
    assert len((await shop.get("/rpc/search_products?q=hat&limit=2")).json()) == 2
    one = await shop.get("/categories?slug=eq.shoes", headers={"Accept": "application/vnd.pgrst.object+json"})
    assert one.json()["slug"] == "shoes"
    many = await shop.get("/categories?slug=eq.shoes")
    assert many.json()[0]["slug"] == "shoes"
    assert await hits(shop) == before


async def test_only_anonymous_catalog_reads_with_200_are_kept(shop: httpx.AsyncClient) -> None:
    before = await hits(shop)
    for _ in range(2):
        assert (await shop.get("/gw_things?order=id")).status_code == 200  # not a catalog view
        assert (await shop.get("/products/999999")).status_code == 404
        assert (await shop.get("/products?id=eq.x")).status_code == 400
        assert (
            await shop.get("/products", headers={"Prefer": "count=exact", "Range": "0-1"})
        ).status_code == 206
        assert (await shop.post("/rpc/search_products", json={"q": "shoe"})).status_code == 200
    assert await hits(shop) == before
    assert len(cache_of(shop).entries) == 0


async def test_a_price_change_reaches_two_gateways_within_a_second(gw_fresh: GatewayDb) -> None:
    first = product_id(gw_fresh, "SKU-001")
    pages = [f"/products/{first}", f"/products?id=eq.{first}&select=id,price_minor"]
    async with AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(serve(create_app(cached(gw_fresh)))) for _ in range(2)]
        for worker in workers:
            await live(worker)
            for page in pages:
                for _ in range(2):
                    assert (await worker.get(page)).status_code == 200
            assert await hits(worker) == len(pages)
        staff = await stack.enter_async_context(
            httpx.AsyncClient(transport=workers[0]._transport, base_url="http://gateway.test")
        )
        user = await signup(staff)
        make_admin(gw_fresh, user["id"])
        token = await bearer(staff, user["email"])
        changed = await staff.patch(f"/products/{first}", json={"price_minor": 4242}, headers=token)
        assert changed.status_code == 200, changed.text
        committed = time.monotonic()

        async def everywhere() -> bool:
            for worker in workers:
                for page in pages:
                    body = (await worker.get(page)).json()
                    row = body[0] if isinstance(body, list) else body
                    if row["price_minor"] != 4242:
                        return False
            return True

        await until(everywhere, 1.0, "the new price on both gateways")
        assert time.monotonic() - committed < 1.0
        for worker in workers:
            assert (
                await metric(worker, "commercecore_catalog_cache_invalidations_total", '{reason="change"}')
                >= 1
            )


async def test_a_customer_response_is_never_served_to_anyone_else(
    shop: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    visible = product_id(gw_fresh, "SKU-002")
    hidden = product_id(gw_fresh, "SKU-013")  # inactive: staff's alone
    transport = shop._transport
    async with AsyncExitStack() as stack:
        staff, alice, bob = [
            await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
            )
            for _ in range(3)
        ]
        admin = await signup(staff)
        make_admin(gw_fresh, admin["id"])
        staff_token = await bearer(staff, admin["email"])
        tokens = {}
        for name, client in (("alice", alice), ("bob", bob)):
            user = await signup(client, f"{name}-{time.monotonic_ns()}@example.com")
            tokens[name] = await bearer(client, user["email"])
            ordered = await client.post(
                "/orders", json={"items": [{"product_id": visible, "quantity": 1}]}, headers=tokens[name]
            )
            assert ordered.status_code == 201, ordered.text
        # anonymous first, then everyone: each gets their own
        for _ in range(2):
            assert "cost_minor" not in (await shop.get(f"/products/{visible}")).json()
        for _ in range(2):
            assert "cost_minor" in (await staff.get(f"/products/{visible}", headers=staff_token)).json()
            assert (await staff.get(f"/products/{hidden}", headers=staff_token)).status_code == 200
            assert (await shop.get(f"/products/{hidden}")).status_code == 404
            assert "cost_minor" not in (await shop.get(f"/products/{visible}")).json()
        own = {}
        for name, client in (("alice", alice), ("bob", bob)):
            for _ in range(2):
                me = await client.get("/me", headers=tokens[name])
                assert me.json()["email"].startswith(name)
                assert me.headers["cache-control"] == "private, no-store"
                orders = (await client.get("/orders", headers=tokens[name])).json()
                assert len(orders) == 1
                own[name] = orders[0]["id"]
        assert own["alice"] != own["bob"]
        assert (await alice.get(f"/orders/{own['bob']}", headers=tokens["alice"])).status_code == 404
        assert (await shop.get("/orders")).status_code == 401
    kept = [entry.reply.body or b"" for entry in cache_of(shop).entries.values()]
    assert kept
    assert all(b"cost_minor" not in body for body in kept)


# -- stock ---------------------------------------------------------------------------------------------


async def order_one(client: httpx.AsyncClient, product: int) -> None:
    """A customer of their own (not `client`, which stays anonymous) orders one unit."""
    async with httpx.AsyncClient(transport=client._transport, base_url="http://gateway.test") as buyer:
        user = await signup(buyer, f"buyer-{time.monotonic_ns()}@example.com")
        token = await bearer(buyer, user["email"])
        ordered = await buyer.post(
            "/orders", json={"items": [{"product_id": product, "quantity": 1}]}, headers=token
        )
        assert ordered.status_code == 201, ordered.text


async def test_stock_is_fresh_within_the_staleness_bound(
    shop: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    product = product_id(gw_fresh, "SKU-004")
    page = f"/products/{product}"
    stock = (await shop.get(page)).json()["stock"]
    before = await hits(shop)
    assert (await shop.get(page)).json()["stock"] == stock
    assert await hits(shop) == before + 1
    await order_one(shop, product)
    ordered = time.monotonic()

    async def fresh() -> bool:
        return bool((await shop.get(page)).json()["stock"] == stock - 1)

    await until(fresh, 2.0, "the stock after the order")
    # the bound counts from the read that filled the entry, which came before the order
    assert time.monotonic() - ordered <= cache_of(shop).staleness + 0.25


async def test_orders_do_not_empty_the_cache(gw_fresh: GatewayDb) -> None:
    """Stock pages stay served from memory for their whole bound, whatever the orders; the rest stays."""
    product = product_id(gw_fresh, "SKU-005")
    async with serve(create_app(cached(gw_fresh, staleness=60.0))) as client:
        await live(client)
        stock = (await client.get(f"/products/{product}")).json()["stock"]
        assert (await client.get("/categories")).status_code == 200
        for _ in range(3):
            await order_one(client, product)
        stocks = admin_sql(gw_fresh, "select stock from core.products where id = %s", [product])
        assert stocks[0][0] == stock - 3
        before = await hits(client)
        assert (await client.get(f"/products/{product}")).json()["stock"] == stock  # within its 60 s
        assert (await client.get("/categories")).status_code == 200
        assert await hits(client) == before + 2
        assert (
            await metric(client, "commercecore_catalog_cache_invalidations_total", '{reason="change"}') == 0
        )
        assert await metric(client, "commercecore_catalog_cache_invalidations_total", '{reason="stock"}') >= 1


async def test_no_staleness_never_caches_stock_pages(gw_fresh: GatewayDb) -> None:
    product = product_id(gw_fresh, "SKU-006")
    async with serve(create_app(cached(gw_fresh, staleness=0))) as client:
        await live(client)
        stock = (await client.get(f"/products/{product}")).json()["stock"]
        before = await hits(client)
        for page in (f"/products/{product}", "/products?select=id,stock", "/rpc/search_products?q=hat"):
            for _ in range(2):
                assert (await client.get(page)).status_code == 200
        assert await hits(client) == before
        await order_one(client, product)
        assert (await client.get(f"/products/{product}")).json()["stock"] == stock - 1
        # pages without stock are still kept
        for _ in range(2):
            assert (await client.get("/products?select=id,name")).status_code == 200
            assert (await client.get("/categories")).status_code == 200
        assert await hits(client) == before + 2


# -- the listener --------------------------------------------------------------------------------------


async def test_a_lost_listener_empties_and_bypasses_the_cache_until_it_is_back(
    shop: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    cache, listener = cache_of(shop), listener_of(shop)
    for _ in range(2):
        assert (await shop.get("/categories")).status_code == 200
    assert len(cache.entries) == 1
    pid = listener.backend_pid
    assert pid is not None
    assert admin_sql(gw_fresh, "select pg_terminate_backend(%s)", [pid]) == [(True,)]

    async def lost() -> bool:
        return not cache.live

    await until(lost, 5.0, "the listener to notice")
    assert len(cache.entries) == 0
    bypassed = await metric(shop, "commercecore_catalog_cache_bypasses_total")
    # a change while nobody listens: bypassed reads see it, and so do reads after the return
    admin_sql(gw_fresh, "update core.categories set name = 'Caps' where slug = 'hats'")
    assert "Caps" in (await shop.get("/categories")).text
    assert await metric(shop, "commercecore_catalog_cache_bypasses_total") == bypassed + 1

    async def back() -> bool:
        return cache.live and listener.backend_pid != pid

    await until(back, LISTENING, "the listener to reconnect")
    before = await hits(shop)
    for _ in range(2):
        assert "Caps" in (await shop.get("/categories")).text
    assert await hits(shop) == before + 1
    assert await metric(shop, "commercecore_catalog_cache_invalidations_total", '{reason="listener"}') >= 2


async def test_the_cache_waits_for_notifications_to_arrive(gw_fresh: GatewayDb) -> None:
    """A listener whose probe never arrives (what a transaction-pooling proxy does) leaves the cache
    bypassed: nothing is served that a notification could not correct."""
    app = create_app(replace(cached(gw_fresh), pool_timeout=0.5))
    gateway = app.state.gateway
    send = gateway.send_notification

    async def lost_probe(channel: str, payload: str) -> None:
        await send(channel, "probe:someone-else")

    gateway.send_notification = lost_probe
    async with serve(app) as client:
        listener = listener_of(client)

        async def probed() -> bool:
            return listener.delay > 0.5  # one attempt failed and was retried

        await until(probed, LISTENING, "a failed probe")
        assert not cache_of(client).live
        for _ in range(2):
            assert (await client.get("/categories")).status_code == 200
        assert await hits(client) == 0
        assert await metric(client, "commercecore_catalog_cache_bypasses_total") == 2


# -- the bound in bytes --------------------------------------------------------------------------------


async def test_many_pages_never_grow_past_the_budget(gw_fresh: GatewayDb) -> None:
    budget = 16 * 1024
    async with serve(create_app(cached(gw_fresh, max_bytes=budget))) as client:
        await live(client)
        cache = cache_of(client)
        for id_ in range(1, 40):
            for query in (f"id=eq.{id_}", f"id=eq.{id_}&select=id,name", f"id=lte.{id_}&limit=3"):
                assert (await client.get(f"/products?{query}")).status_code == 200
                assert cache.entries.size <= budget
        assert len(cache.entries) > 1
        assert await metric(client, "commercecore_catalog_cache_evictions_total") > 0
        assert 0 < await metric(client, "commercecore_catalog_cache_bytes") <= budget


# -- settings ------------------------------------------------------------------------------------------


def test_the_cache_settings_come_from_the_environment() -> None:
    assert CatalogCacheLimits.from_env({}) == CatalogCacheLimits(32 * 1024 * 1024, 1.0)
    chosen = CatalogCacheLimits.from_env(
        {"COMMERCECORE_CATALOG_CACHE_BYTES": "0", "COMMERCECORE_CATALOG_STALENESS": "0.25"}
    )
    assert chosen == CatalogCacheLimits(0, 0.25)
    for name, value in (
        ("COMMERCECORE_CATALOG_CACHE_BYTES", "-1"),
        ("COMMERCECORE_CATALOG_STALENESS", "soon"),
    ):
        with pytest.raises(SettingsError, match=name):
            CatalogCacheLimits.from_env({name: value})
