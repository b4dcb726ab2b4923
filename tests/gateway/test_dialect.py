"""The PostgREST read dialect on views (and on set-returning functions): every operator, not., logic trees,
select, order, limit/offset, Range, Prefer: count, 206/416, HEAD and singular objects."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def ids(client: httpx.AsyncClient, query: str, **headers: str) -> list[int]:
    response = await client.get("/gw_things?" + query, headers=headers)
    assert response.status_code in (200, 206), response.text
    return [row["id"] for row in response.json()]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=eq.alpha", [1]),
        ("flag=neq.true", [2, 5]),
        ("price=gt.20", [3, 5]),
        ("price=gte.20", [2, 3, 5]),
        ("price=lt.20", [1]),
        ("price=lte.20", [1, 2]),
        ("price=eq.10.504", []),  # no cast to numeric(10,2): 10.504 is not rounded into a match
        ("name=like.b*a", [2]),
        ("note=like.j*foxes", [5]),
        ("name=ilike.ALPHA", [1]),
        ("name=ilike.GA*", [3]),
        ("note=like.f%25g", [1]),  # % in the value is a wildcard too, as in SQL and PostgREST
        ("note=like.with \\%25*", [4]),  # an escaped % is the character
        ("name=match.^be", [2]),
        ("name=imatch.^ALP", [1]),
        ("note=match.^q.*foxes$", [3]),
        ("id=in.(1,3)", [1, 3]),
        ('name=in.("delta\'s \\"quoted\\", (x)",beta)', [2, 4]),
        ("id=in.()", []),
        ("flag=is.null", [3]),
        ("flag=is.true", [1, 4]),
        ("flag=is.false", [2, 5]),
        ("flag=is.unknown", [3]),
        ("note=is.not_null", [1, 3, 4, 5]),
        ("flag=not.is.null", [1, 2, 4, 5]),
        ("price=not.gt.20", [1, 2]),
        ("name=not.in.(alpha,beta)", [3, 4, 5]),
        ("name=not.like.a*", [2, 3, 4, 5]),
        ("search=fts.foxes", [3, 5]),
        ("search=fts(english).jump", [5]),
        ("search=fts(simple).fox", [3, 5]),  # the vector holds English stems
        ("search=plfts.quick brown", [3]),
        ("search=phfts.brown foxes", [3]),
        ("search=wfts.foxes -jumping", [3]),
        ("search=not.fts.foxes", [1, 2, 4]),
        ("name=fts.alpha", [1]),
        ("at=gte.2026-02-01T00:00:00Z", [2, 3, 5]),
        ("at=lt.2026-02-01", [1]),
        ('doc=eq.{"k": 1}', [1]),
        ("tags=eq.{blue}", [2]),
        ("price=gte.10&price=lte.30.25", [1, 2, 3]),
        ("or=(id.eq.1,id.eq.5)", [1, 5]),
        ("or=(id.eq.1,and(price.gt.20,flag.is.false))", [1, 5]),
        ("not.or=(id.eq.1,id.eq.5)", [2, 3, 4]),
        ("and=(price.gt.10,flag.not.is.true)", [2, 3, 5]),
        ('or=(name.eq."delta\'s \\"quoted\\", (x)",id.eq.2)', [2, 4]),
    ],
)
async def test_filters(client: httpx.AsyncClient, query: str, expected: list[int]) -> None:
    assert await ids(client, query + "&order=id") == expected


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("price.desc.nullslast", [5, 3, 2, 1, 4]),
        ("price.asc.nullsfirst", [4, 1, 2, 3, 5]),
        ("price", [1, 2, 3, 5, 4]),
        ("flag.asc.nullsfirst,id.desc", [3, 5, 2, 4, 1]),
        ("name.desc", [3, 5, 4, 2, 1]),
    ],
)
async def test_order(client: httpx.AsyncClient, order: str, expected: list[int]) -> None:
    assert await ids(client, f"order={order}") == expected


async def test_select_and_aliases(client: httpx.AsyncClient) -> None:
    response = await client.get("/gw_things?select=id,name&id=eq.1")
    assert response.json() == [{"id": 1, "name": "alpha"}]
    response = await client.get("/gw_things?select=ident:id,tags&id=eq.1")
    assert response.json() == [{"ident": 1, "tags": ["red", "blue"]}]
    response = await client.get("/gw_things?id=eq.1")
    row = response.json()[0]
    assert row["doc"] == {"k": 1}
    assert row["price"] == 10.5
    assert set(row) == {"id", "name", "tags", "flag", "doc", "price", "at", "note", "search"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("select=id,nope", "nope"),
        ("nope=eq.1", "nope"),
        ("order=nope.desc", "nope"),
        ("or=(nope.eq.1)", "nope"),
    ],
)
async def test_unknown_columns_are_400(client: httpx.AsyncClient, query: str, field: str) -> None:
    response = await client.get("/gw_things?" + query)
    assert response.status_code == 400
    assert response.json()["details"]["field"] == field


@pytest.mark.parametrize(
    "query",
    [
        "id=1",
        "id=between.1.2",
        "id=in.1,2",
        "flag=is.maybe",
        "order=id.sideways",
        "limit=-1",
        "limit=ten",
        "offset=1.5",
        "select=count(*)",
        "select=id::text",
        "select=bad alias:id",
        "or=(id.eq.1",
        "or=id.eq.1",
        "limit=1&limit=2",
        'id=in.("unterminated)',
    ],
)
async def test_malformed_queries_are_400(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get("/gw_things?" + query)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"code", "message", "details", "hint"}


async def test_wrong_value_type_names_the_column(client: httpx.AsyncClient) -> None:
    response = await client.get("/gw_things?id=eq.abc")
    assert response.status_code == 400
    assert response.json()["details"] == {"code": "invalid_input", "field": "id"}
    assert response.json()["code"] == "22P02"
    response = await client.get("/gw_things?at=gt.yesterday-ish")
    assert response.json()["details"]["field"] == "at"
    response = await client.get("/gw_things?id=in.(1,x)")
    assert response.json()["details"]["field"] == "id"
    response = await client.get("/gw_things?search=fts(nosuchconfig).fox")
    assert response.status_code == 400


async def test_limit_offset_and_counts(client: httpx.AsyncClient) -> None:
    response = await client.get("/gw_things?order=id&limit=2&offset=1")
    assert [r["id"] for r in response.json()] == [2, 3]
    assert response.status_code == 200
    assert response.headers["content-range"] == "1-2/*"
    response = await client.get("/gw_things?order=id&limit=2&offset=1", headers={"Prefer": "count=exact"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "1-2/5"
    response = await client.get("/gw_things?order=id", headers={"Prefer": "count=exact"})
    assert response.status_code == 200
    assert response.headers["content-range"] == "0-4/5"
    response = await client.get("/gw_things?order=id&flag=is.true", headers={"Prefer": "count=exact"})
    assert response.headers["content-range"] == "0-1/2"
    response = await client.get("/gw_things?limit=0", headers={"Prefer": "count=exact"})
    assert response.json() == []
    assert response.headers["content-range"] == "*/5"


async def test_range_header(client: httpx.AsyncClient) -> None:
    headers = {"Range": "0-1", "Range-Unit": "items", "Prefer": "count=exact"}
    response = await client.get("/gw_things?order=id", headers=headers)
    assert response.status_code == 206
    assert [r["id"] for r in response.json()] == [1, 2]
    assert response.headers["content-range"] == "0-1/5"
    response = await client.get("/gw_things?order=id", headers={**headers, "Range": "3-"})
    assert [r["id"] for r in response.json()] == [4, 5]
    assert response.headers["content-range"] == "3-4/5"
    response = await client.get("/gw_things?order=id", headers={**headers, "Range": "0-99"})
    assert response.status_code == 200
    assert response.headers["content-range"] == "0-4/5"
    # Range and limit/offset intersect
    response = await client.get("/gw_things?order=id&offset=1&limit=10", headers={**headers, "Range": "0-2"})
    assert [r["id"] for r in response.json()] == [2, 3]


async def test_unsatisfiable_ranges_are_416(client: httpx.AsyncClient) -> None:
    response = await client.get("/gw_things?offset=10", headers={"Prefer": "count=exact"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "*/5"
    assert response.json()["code"] == "PGRST103"
    response = await client.get("/gw_things", headers={"Range": "5-2"})
    assert response.status_code == 416
    response = await client.get("/gw_things", headers={"Range": "bytes"})
    assert response.status_code == 416
    # without a count nothing is known about the end: an empty page
    response = await client.get("/gw_things?offset=10")
    assert response.status_code == 200
    assert response.json() == []


async def test_planned_and_estimated_counts(client: httpx.AsyncClient) -> None:
    response = await client.get("/gw_things?limit=1", headers={"Prefer": "count=planned"})
    assert response.status_code in (200, 206)
    total = response.headers["content-range"].split("/")[1]
    assert total.isdigit()
    response = await client.get("/gw_things?limit=1", headers={"Prefer": "count=estimated"})
    assert response.headers["content-range"] == "0-0/5"  # under the threshold: exact
    assert response.status_code == 206


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/gw_things?order=id&limit=2", headers={"Prefer": "count=exact"})
    assert response.status_code == 206
    assert response.content == b""
    assert response.headers["content-range"] == "0-1/5"


async def test_singular_object(client: httpx.AsyncClient) -> None:
    accept = {"Accept": "application/vnd.pgrst.object+json"}
    response = await client.get("/gw_things?id=eq.2&select=id,name", headers=accept)
    assert response.json() == {"id": 2, "name": "beta"}
    response = await client.get("/gw_things?id=eq.999", headers=accept)
    assert response.status_code == 406
    response = await client.get("/gw_things?flag=is.true", headers=accept)
    assert response.status_code == 406
    assert response.json()["details"]["rows"] == 2


async def test_view_routes_declared_in_comments(client: httpx.AsyncClient) -> None:
    response = await client.get("/gw/things/2")
    assert response.status_code == 200
    assert response.json()["name"] == "beta"
    response = await client.get("/gw/things/2?select=name")
    assert response.json() == {"name": "beta"}
    assert (await client.get("/gw/things/999")).status_code == 404
    response = await client.get("/gw/things/abc")
    assert response.status_code == 400
    assert response.json()["details"]["field"] == "id"
    assert await ids(client, "") == await ids(client, "")
    response = await client.get("/gw/all-things?order=id&limit=1")
    assert [r["id"] for r in response.json()] == [1]


async def test_products_keyset_pagination(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/products?select=id,sku&order=id")).json()
    by_sku = {row["sku"]: row["id"] for row in everything}
    response = await client.get(f"/products?id=gt.{by_sku['SKU-010']}&order=id&limit=3&select=id,sku")
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()
    # SKU-013 is inactive: the public catalog skips it
    assert [r["sku"] for r in rows] == ["SKU-011", "SKU-012", "SKU-014"]
    response = await client.get("/products?order=price_minor.desc&limit=1", headers={"Prefer": "count=exact"})
    assert response.headers["content-range"] == "0-0/24"
    response = await client.get("/products?name=ilike.product 1*&select=sku&order=sku")
    # SKU-013 is inactive
    expected = [f"SKU-{n:03d}" for n in (1, 10, 11, 12, 14, 15, 16, 17, 18, 19)]
    assert [r["sku"] for r in response.json()] == expected


async def test_set_returning_function_results_take_the_dialect(client: httpx.AsyncClient) -> None:
    response = await client.get("/rpc/gw_setof?n=6&even=is.true&order=i.desc&limit=2&select=i")
    assert response.status_code == 200, response.text
    assert response.json() == [{"i": 6}, {"i": 4}]
    response = await client.get("/rpc/gw_setof?n=6", headers={"Prefer": "count=exact", "Range": "0-1"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "0-1/6"
    response = await client.post("/rpc/gw_setof?label=eq.n3", json={"n": 5})
    assert response.json() == [{"i": 3, "label": "n3", "even": False}]
