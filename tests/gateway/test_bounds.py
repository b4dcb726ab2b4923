"""Bounded requests: every limit of a request's size is a 4xx in the error shape with the limit in `details`,
before the request costs the database anything; `commercecore serve` refuses a 10 MB URL as it arrives
(414, in well under a second, and the worker goes on answering), and URL-sized requests do not grow the
worker: the statement caches keep nothing large.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.caches import BoundedCache
from gateway.settings import RequestLimits, Settings
from tests.conftest import ServedGateway, served_gateway
from tests.gateway.conftest import GatewayDb, gateway_of, serve, settings_for

ERROR_KEYS = {"code", "message", "details", "hint"}
DEFAULTS = RequestLimits()
MB = 1024 * 1024


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error shape with this status and details.code; the details."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["details"]["code"] == code, body
    assert response.headers.get("x-request-id"), response.headers
    details: dict[str, Any] = body["details"]
    return details


# -- each limit, with its default ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_query_string_and_path_over_8_kib_are_414(client: httpx.AsyncClient) -> None:
    assert DEFAULTS.max_query_bytes == 8192
    query = "id=gt.0&name=neq." + "x" * (8192 - len("id=gt.0&name=neq."))
    assert (await client.get("/gw_things?" + query)).status_code == 200
    details = refused(await client.get("/gw_things?" + query + "x"), 414, "uri_too_long")
    assert details == {"code": "uri_too_long", "limit": 8192, "field": "query string"}
    details = refused(await client.get("/" + "p" * 8192), 414, "uri_too_long")
    assert details["field"] == "path"
    assert details["limit"] == 8192


@pytest.mark.anyio
async def test_select_over_100_columns_is_400(client: httpx.AsyncClient) -> None:
    assert (await client.get("/gw_things?select=" + ",".join(["id"] * 100))).status_code == 200
    response = await client.get("/gw_things?select=" + ",".join(["id"] * 101))
    details = refused(response, 400, "too_many_columns")
    assert details["limit"] == 100
    assert details["given"] == 101
    # a star counts as the columns it stands for
    response = await client.get("/gw_things?select=" + ",".join(["*"] * 12))
    assert refused(response, 400, "too_many_columns")["limit"] == 100


@pytest.mark.anyio
async def test_over_50_filters_is_400_logic_trees_included(client: httpx.AsyncClient) -> None:
    fifty = "&".join(["id=gt.0"] * 50)
    assert (await client.get("/gw_things?" + fifty)).status_code == 200
    details = refused(await client.get("/gw_things?" + fifty + "&id=gt.0"), 400, "too_many_filters")
    assert details == {"code": "too_many_filters", "limit": 50, "given": 51}
    leaves = ",".join(f"id.eq.{i}" for i in range(48))
    details = refused(
        await client.get(f"/gw_things?or=({leaves},and(id.gt.0,id.lt.9))&name=neq.x"), 400, "too_many_filters"
    )
    assert details["given"] == 51


@pytest.mark.anyio
async def test_over_1000_in_values_is_400(client: httpx.AsyncClient) -> None:
    values = ",".join(str(i) for i in range(1, 1001))
    response = await client.get(f"/gw_things?id=in.({values})&select=id&order=id")
    assert [row["id"] for row in response.json()] == [1, 2, 3, 4, 5]
    details = refused(await client.get(f"/gw_things?id=in.({values},1001)"), 400, "too_many_values")
    assert details == {"code": "too_many_values", "limit": 1000, "given": 1001, "field": "id"}


@pytest.mark.anyio
async def test_logic_filters_nest_8_levels(client: httpx.AsyncClient) -> None:
    def nested(levels: int) -> str:
        inner = "id.eq.1"
        for _ in range(levels - 1):
            inner = f"and(id.gt.0,{inner})"
        return f"or=({inner})"

    response = await client.get("/gw_things?select=id&" + nested(8))
    assert response.json() == [{"id": 1}], response.text
    details = refused(await client.get("/gw_things?" + nested(9)), 400, "too_deep")
    assert details["limit"] == 8


@pytest.mark.anyio
async def test_header_count_and_size_are_431(client: httpx.AsyncClient) -> None:
    # httpx sends a few of its own (host, accept, accept-encoding, connection, user-agent)
    many = [(f"x-h{i}", "1") for i in range(DEFAULTS.max_headers)]
    details = refused(await client.get("/gw_things", headers=many), 431, "headers_too_large")
    assert details["limit"] == {"count": 100, "bytes": 32768}
    assert details["count"] > 100
    details = refused(
        await client.get("/gw_things", headers={"x-big": "v" * 32768}), 431, "headers_too_large"
    )
    assert details["bytes"] > 32768
    assert (await client.get("/gw_things", headers={"x-big": "v" * 16000})).status_code == 200


# -- configurable --------------------------------------------------------------------------------------


def test_every_limit_is_read_from_the_environment(gw_db: GatewayDb) -> None:
    env = {
        "DATABASE_URL": gw_db.gateway_url,
        "COMMERCECORE_JWT_SECRET": "k" + "".join(chr(65 + i % 26) for i in range(40)),
        "COMMERCECORE_MAX_QUERY_BYTES": "1024",
        "COMMERCECORE_MAX_HEADERS": "20",
        "COMMERCECORE_MAX_HEADER_BYTES": "2048",
        "COMMERCECORE_MAX_SELECT_COLUMNS": "3",
        "COMMERCECORE_MAX_FILTERS": "2",
        "COMMERCECORE_MAX_IN_VALUES": "4",
        "COMMERCECORE_MAX_LOGIC_DEPTH": "2",
        "COMMERCECORE_STATEMENT_CACHE_BYTES": "65536",
        "COMMERCECORE_STATEMENT_CACHE_MAX_ENTRY": "512",
    }
    assert Settings.from_env(env).limits == RequestLimits(1024, 20, 2048, 3, 2, 4, 2, 65536, 512)
    assert (
        Settings.from_env(
            {k: v for k, v in env.items() if not k.startswith("COMMERCECORE_M") and "CACHE" not in k}
        ).limits
        == DEFAULTS
    )


@pytest.fixture
async def small(gw_db: GatewayDb) -> AsyncIterator[httpx.AsyncClient]:
    limits = RequestLimits(max_query_bytes=512, max_select_columns=2, max_filters=2, max_in_values=3)
    async with serve(create_app(settings_for(gw_db, limits=limits))) as http:
        yield http


@pytest.mark.anyio
async def test_configured_limits_hold_and_are_named(small: httpx.AsyncClient) -> None:
    assert refused(await small.get("/gw_things?name=neq." + "x" * 600), 414, "uri_too_long")["limit"] == 512
    assert refused(await small.get("/gw_things?select=id,name,note"), 400, "too_many_columns")["limit"] == 2
    response = await small.get("/gw_things?id=gt.0&id=lt.9&name=neq.x")
    assert refused(response, 400, "too_many_filters")["limit"] == 2
    assert refused(await small.get("/gw_things?id=in.(1,2,3,4)"), 400, "too_many_values")["limit"] == 3


# -- the statement caches ------------------------------------------------------------------------------


def test_bounded_cache_keeps_bytes_not_entries() -> None:
    cache: BoundedCache[int, str] = BoundedCache(max_bytes=1000, max_entry=300)
    assert not cache.put(1, "x", 301)  # one-off large entries are never kept
    for key in range(10):
        assert cache.put(key, "v", 200)
    assert cache.size <= 1000
    assert len(cache) == 5
    assert cache.get(9) == "v"
    assert cache.get(0) is None  # the least recently used went first
    cache.get(5)
    cache.put(10, "v", 200)
    assert 5 in cache
    assert 6 not in cache


@pytest.mark.anyio
async def test_reads_with_url_sized_query_strings_are_not_kept(client: httpx.AsyncClient) -> None:
    table = (await gateway_of(client).current()).routes
    table.prepared.clear()
    assert (await client.get("/gw_things?select=id&name=neq." + "x" * 5000)).status_code == 200
    assert len(table.prepared) == 0
    assert (await client.get("/gw_things?select=id&name=neq.x")).status_code == 200
    assert len(table.prepared) == 1
    assert table.prepared.max_bytes == DEFAULTS.statement_cache_bytes


# -- a real worker: `commercecore serve` -----------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(gw_db: GatewayDb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    with served_gateway(gw_db.gateway_url, tmp_path_factory.mktemp("bounds")) as served:
        yield served


def raw_request(url: str, head: bytes) -> tuple[bytes, float]:
    """Sends `head` (a request line and headers, however large) on a fresh connection from a thread while
    reading the answer; (the answer's bytes, seconds until it was complete)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:

        def send() -> None:
            try:
                sock.sendall(head)
            except OSError:
                return  # the server closed its side: the answer is what counts

        sender = threading.Thread(target=send, daemon=True)
        started = time.monotonic()
        sender.start()
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
        sender.join(timeout=10)
    return answer, elapsed


def test_a_10_mb_query_string_is_414_at_once_and_the_worker_answers_on(worker: ServedGateway) -> None:
    target = "/products?name=eq." + "x" * (10 * MB)
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    answer, elapsed = raw_request(worker.url, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 414"), answer[:300]
    assert b'"uri_too_long"' in rest
    assert b'"limit":8192' in rest
    print(f"\n10 MB query string: 414 after {elapsed * 1000:.0f} ms")
    assert elapsed < 1.0, elapsed
    response = httpx.get(worker.url + "/products?limit=1", timeout=10)
    assert response.status_code == 200, response.text


def test_10_mb_of_headers_is_431_at_once(worker: ServedGateway) -> None:
    head = b"GET /products HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"v" * (10 * MB) + b"\r\n\r\n"
    answer, elapsed = raw_request(worker.url, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert elapsed < 1.0, elapsed
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
    answer, _ = raw_request(worker.url, b"GET /products HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert httpx.get(worker.url + "/products?limit=1", timeout=10).status_code == 200


def distinct_urls(count: int, seed: int) -> Iterator[str]:
    """URLs of just under 8 KiB of query string, each different: long in. lists, long values, and or=
    trees of varying shape (distinct SQL texts)."""
    rng = random.Random(seed)
    columns = ("id", "price_minor", "stock", "category_id")
    for index in range(count):
        kind = index % 3
        if kind == 0:
            values = ",".join(str(rng.randrange(10**6)) for _ in range(1000))
            query = f"select=id&id=in.({values})"
        elif kind == 1:
            query = "select=id,name&name=eq." + "".join(rng.choice("abcdefgh") for _ in range(7900))
        else:
            leaves = ",".join(
                f"{rng.choice(columns)}.{rng.choice(('eq', 'gt', 'lt', 'neq'))}.{rng.randrange(10**9)}"
                for _ in range(rng.randrange(20, 49))
            )
            query = f"or=({leaves})&name=neq." + "y" * rng.randrange(3000, 6000)
        assert len(query.encode()) <= 8192, len(query)
        yield "/products?" + query


def test_1000_distinct_8_kib_urls_leave_the_worker_its_memory(worker: ServedGateway) -> None:
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        for url in distinct_urls(60, seed=1):  # the allocator's and the caches' working set
            assert http.get(url).status_code == 200
        before = worker.rss_bytes()
        statuses = [http.get(url).status_code for url in distinct_urls(1000, seed=2)]
        after = worker.rss_bytes()
    assert set(statuses) == {200}, set(statuses)
    growth = after - before
    print(f"\n1000 distinct 8 KiB URLs: worker RSS {before / MB:.1f} MB -> {after / MB:.1f} MB")
    assert growth < 50 * MB, growth
