"""SQL metacharacters in every position a request can put text: the answer is a 4xx or the correct result,
never a 500, and the database is unchanged."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from tests.gateway.conftest import GatewayDb, data_fingerprint

pytestmark = pytest.mark.anyio

METACHARACTERS = [
    "'",
    '"',
    ";",
    "--",
    "/*",
    "*/",
    "(",
    ")",
    ",",
    ".",
    ":",
    "\\",
    "%",
    "_",
    "*",
    "$1",
    "%s",
    "%(x)s",
    "{}",
    "{",
    "[]",
    "\x00",
    "\n",
    "é",
    "\u2028",
    "' or '1'='1",
    '"; drop table gwtest.things; --',
    "1); drop table gwtest.things; --",
    "id) or (1=1",
    "id desc; select pg_sleep(10)",
    'name" from gwtest.things; --',
    "x' || (select string_agg(email, ',') from core.users) || '",
    "a" * 2000,
]

QUERY_POSITIONS: dict[str, Callable[[str], list[tuple[str, str]]]] = {
    "eq value (text)": lambda m: [("name", f"eq.{m}")],
    "eq value (bigint)": lambda m: [("id", f"eq.{m}")],
    "eq value (array)": lambda m: [("tags", f"eq.{m}")],
    "eq value (jsonb)": lambda m: [("doc", f"eq.{m}")],
    "like pattern": lambda m: [("name", f"like.{m}")],
    "anchored like pattern": lambda m: [("name", f"ilike.a{m}*")],
    "regex pattern": lambda m: [("name", f"match.^a{m}")],
    "in list": lambda m: [("name", f"in.({m})")],
    "in quoted list": lambda m: [("name", 'in.("' + m.replace("\\", "\\\\").replace('"', '\\"') + '")')],
    "is value": lambda m: [("flag", f"is.{m}")],
    "fts query": lambda m: [("search", f"fts.{m}")],
    "fts config": lambda m: [("search", f"fts({m}).fox")],
    "column": lambda m: [(m, "eq.1")],
    "operator": lambda m: [("name", f"{m}.x")],
    "negated operator": lambda m: [("name", f"not.{m}.x")],
    "select column": lambda m: [("select", m)],
    "select alias": lambda m: [("select", f"{m}:id")],
    "select list": lambda m: [("select", f"id,{m}")],
    "order column": lambda m: [("order", m)],
    "order modifier": lambda m: [("order", f"id.{m}")],
    "limit": lambda m: [("limit", m)],
    "offset": lambda m: [("offset", m)],
    "logic tree": lambda m: [("or", f"({m})")],
    "logic value": lambda m: [("or", f"(name.eq.{m},id.eq.-1)")],
    "rpc query argument": lambda m: [("n", m)],
}


def _assert_answer(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"code", "message", "details", "hint"}, what


@pytest.mark.parametrize("position", sorted(QUERY_POSITIONS))
async def test_query_positions(client: httpx.AsyncClient, gw_db: GatewayDb, position: str) -> None:
    before = data_fingerprint(gw_db)
    build = QUERY_POSITIONS[position]
    path = "/rpc/gw_setof" if position == "rpc query argument" else "/gw_things"
    for m in METACHARACTERS:
        response = await client.get(path, params=build(m))
        _assert_answer(response, f"{position} {m!r}")
        if response.status_code == 200 and position in ("eq value (text)", "in quoted list") and m != "\x00":
            assert response.json() == [], f"{position} {m!r} matched rows"
    assert data_fingerprint(gw_db) == before


async def test_header_positions(client: httpx.AsyncClient, gw_db: GatewayDb) -> None:
    before = data_fingerprint(gw_db)
    for m in METACHARACTERS:
        if m in ("\x00", "\n", "\u2028", "é"):
            continue  # not valid in a header at all
        for headers in (
            {"Range": m},
            {"Range": f"0-{m}"},
            {"Prefer": f"count={m}"},
            {"Prefer": m},
            {"Accept-Profile": m},
            {"Accept": m},
            {"X-Request-Id": m},
            {"Range-Unit": m, "Range": "0-1"},
        ):
            response = await client.get("/gw_things", headers=headers)
            _assert_answer(response, f"{headers}")
        response = await client.post("/gw/things", json={"name": "never"}, headers={"Content-Profile": m})
        assert response.status_code in (401, 406), m
        response = await client.post("/rpc/gw_echo", json={"a": 1}, headers={"Idempotency-Key": m})
        _assert_answer(response, f"idempotency key {m!r}")
    assert data_fingerprint(gw_db) == before


async def test_rpc_positions(client: httpx.AsyncClient, gw_db: GatewayDb) -> None:
    before = data_fingerprint(gw_db)
    for m in METACHARACTERS:
        # a value round-trips unchanged (or is refused when PostgreSQL cannot store it)
        response = await client.post("/rpc/gw_echo", json={"a": 1, "b": m})
        _assert_answer(response, f"value {m!r}")
        if m == "\x00":
            assert response.status_code == 400
        else:
            assert response.json().get("b") == m, response.text
        response = await client.post("/rpc/gw_echo", json={"a": 1, "tags": [m, m]})
        _assert_answer(response, f"array element {m!r}")
        if m != "\x00":
            assert response.json()["tags"] == [m, m]
        response = await client.post("/rpc/gw_echo", json={"a": 1, "doc": {m: m}})
        _assert_answer(response, f"json {m!r}")
        for payload in ({"a": m}, {m: 1}, {"a": 1, m: m}):
            response = await client.post("/rpc/gw_echo", json=payload)
            _assert_answer(response, f"payload {payload!r}")
            assert response.status_code == 400
        segment = quote(m, safe="")
        for method, path in (
            ("GET", f"/gw/echo/{segment}"),
            ("POST", f"/gw/echo/{segment}"),
            ("GET", f"/gw/things/{segment}"),
            ("GET", f"/rpc/{segment}"),
            ("POST", f"/rpc/{segment}"),
            ("GET", f"/{segment}"),
            ("GET", f"/gw_things/{segment}"),
        ):
            response = await client.request(method, path, json={} if method == "POST" else None)
            _assert_answer(response, f"{method} {path}")
    assert data_fingerprint(gw_db) == before


async def test_writes_with_metacharacters_store_them_verbatim(fresh_client: httpx.AsyncClient) -> None:
    for index, m in enumerate(METACHARACTERS):
        if m == "\x00":
            continue
        name = f"{index}:{m}"
        response = await fresh_client.post("/gw/things", json={"name": name})
        assert response.status_code == 201, response.text
        read = await fresh_client.get("/gw_things", params={"name": f"eq.{name}", "select": "name"})
        assert read.json() == [{"name": name}]
