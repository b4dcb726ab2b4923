"""Anonymous reads can't starve the shop: pattern, full-text and order= filters only on the columns a view
declares (in its comment; listed in OpenAPI), prefix patterns on an index through the security barrier, an
anonymous exact count bounded, a short statement timeout, and at most a share of the pool.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import psycopg
import pytest

from gateway import anonymous, patterns
from gateway.app import create_app
from gateway.dialect import ReadOptions, Source, parse_read
from gateway.query import Fragment, ident, read_statements
from gateway.schema_cache import Column, PgType, ReadRules, SchemaCache
from gateway.settings import AnonymousLimits, Settings, SettingsError
from tests.conftest import Session
from tests.gateway.conftest import GatewayDb, bearer, gateway_of, serve, settings_for, signup

pytestmark = pytest.mark.anyio

PRODUCT_PATTERN = ["name", "sku"]
PRODUCT_ORDER = ["id", "sku", "name", "price_minor", "created_at"]


def not_declared(response: httpx.Response, field: str, allowed: list[str]) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["details"]["code"] == "not_declared", body
    assert body["details"]["field"] == field, body
    assert body["details"]["allowed"] == allowed, body
    details: dict[str, Any] = body["details"]
    return details


# -- declared columns -----------------------------------------------------------------------------------


async def test_pattern_filters_only_on_declared_columns(client: httpx.AsyncClient) -> None:
    response = await client.get("/products?name=ilike.PRODUCT 2*&select=sku&order=sku")
    assert [row["sku"] for row in response.json()] == ["SKU-002", "SKU-020", "SKU-021", "SKU-022", "SKU-023",
                                                        "SKU-024", "SKU-025"]  # fmt: skip
    assert (await client.get("/products?sku=like.SKU-01*&select=sku")).status_code == 200
    for operator in ("like.x*", "ilike.x*", "match.^x", "imatch.^x", "not.ilike.x*"):
        details = not_declared(
            await client.get(f"/products?description={operator}"), "description", PRODUCT_PATTERN
        )
        assert details["operator"] == operator.removeprefix("not.").split(".")[0]
    # inside a logic tree too
    not_declared(
        await client.get("/products?or=(description.like.x*,id.eq.1)"), "description", PRODUCT_PATTERN
    )


async def test_full_text_only_on_declared_columns(client: httpx.AsyncClient) -> None:
    for operator in ("fts", "plfts", "phfts", "wfts", "fts(english)"):
        response = await client.get(f"/products?name={operator}.shoe")
        body = not_declared(response, "name", [])
        assert body["operator"] == operator.split("(")[0]
        assert "search_products" in response.json()["hint"] or "@search" in response.json()["hint"]
    assert (await client.get("/gw_things?search=wfts.foxes")).status_code == 200
    not_declared(await client.get("/gw_things?note=fts.foxes"), "note", ["search", "name"])


async def test_order_only_on_declared_columns(client: httpx.AsyncClient) -> None:
    not_declared(await client.get("/products?order=stock.desc"), "stock", PRODUCT_ORDER)
    not_declared(await client.get("/products?order=id,description"), "description", PRODUCT_ORDER)
    for column in PRODUCT_ORDER:
        assert (await client.get(f"/products?order={column}.desc&limit=2")).status_code == 200
    not_declared(await client.get("/rpc/gw_setof?n=3&order=label"), "label", ["i"])


async def test_patterns_must_be_anchored(client: httpx.AsyncClient) -> None:
    for query in ("name=ilike.*hat", "name=like.%25x", "name=like._x", "name=match.hat", "name=match.^.x",
                  "name=imatch.^(a|b)", "name=match.^a|b", "name=not.like.*x"):  # fmt: skip
        response = await client.get("/products?" + query)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["details"]["code"] == "pattern_not_anchored", query


async def test_declarations_are_read_from_the_comment_and_listed_in_openapi(
    gw_fresh: GatewayDb, client: httpx.AsyncClient
) -> None:
    document = (await client.get("/openapi.json")).json()
    products = document["paths"]["/products"]["get"]
    assert products["x-read-rules"] == {"search": [], "pattern": PRODUCT_PATTERN, "order": PRODUCT_ORDER}
    order = next(p for p in products["parameters"] if p["name"] == "order")
    assert ", ".join(PRODUCT_ORDER) in order["description"]
    name = next(p for p in products["parameters"] if p["name"] == "name")
    assert "ilike" in name["description"]
    stock = next(p for p in products["parameters"] if p["name"] == "stock")
    assert "like" not in stock["description"]
    things = document["paths"]["/gw_things"]["get"]["x-read-rules"]
    assert things == {"search": ["search", "name"], "pattern": ["name", "note"],
                      "order": ["id", "name", "price", "flag", "at"]}  # fmt: skip
    # the declaration lines are not part of the description
    assert "@order" not in products["description"]

    async with serve(create_app(settings_for(gw_fresh))) as http:
        not_declared(await http.get("/gw_things?order=note"), "note", ["id", "name", "price", "flag", "at"])
        with psycopg.connect(gw_fresh.admin_url, autocommit=True) as conn:
            conn.execute("comment on view api.gw_things is 'Test things.\n@order note, nope'")
        state = await gateway_of(http).reload()
        assert state.cache.views["gw_things"].rules == ReadRules(order=("note",))
        assert any("@order 'nope' ignored" in warning for warning in state.cache.warnings)
        assert (await http.get("/gw_things?order=note.desc&select=id")).status_code == 200
        not_declared(await http.get("/gw_things?name=like.a*"), "name", [])


# -- prefix patterns on an index, through the security barrier ------------------------------------------


def plan_of(db: Session, query: str) -> str:
    """The plan of the statement the gateway builds for GET /products?<query>, as an anonymous caller."""
    text = PgType("text", "text", "text", "S")
    columns = {name: Column(name, text) for name in ("name", "sku", "description")}
    source = Source("api.products", columns, ReadRules(pattern=("name", "sku")))
    params = [(key, value) for key, _, value in (part.partition("=") for part in query.split("&"))]
    plan = parse_read(params, source, ReadOptions(), max_rows=1000)
    schema = SchemaCache(type_names=frozenset({"text"}))
    statement = read_statements(Fragment(ident("api", "products")), plan, schema, head=False).main
    # a catalog large enough that an index is worth it, with the statistics of it
    db.conn.execute(
        "insert into core.products (sku, name, price_minor)"
        " select 'GEN-' || lpad(g::text, 9, '0'),"
        " (array['Earl Grey', 'Green Tea', 'Mug'])[g % 3 + 1] || g, 100"
        " from generate_series(1, 20000) as g"
    )
    db.conn.execute("analyze core.products")
    db.as_role("app_readonly")
    rows = db.all("explain " + statement.query, statement.params)
    return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize(
    "query",
    [
        "name=ilike.earl grey 12*",
        "name=like.Earl Grey 7*",
        "sku=like.GEN-0000001*",
        "name=imatch.^mug9",
        "name=match.^Mug1234",
    ],
)
def test_prefix_patterns_reach_their_index_through_the_security_barrier(db: Session, query: str) -> None:
    plan = plan_of(db, query)
    column = query.split("=")[0]
    assert f"products_active_{column}_pattern_idx" in plan, plan


def test_pattern_ranges_hold_every_match() -> None:
    rng = random.Random(7)
    alphabet = "aAbBiIİkKKzZ0-_ßẞåÅσΣ\u212b\u2126ωΩ\U0010ffff\ud7ff\ue000é"
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 6)))
        prefix = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
        for ignore_case in (False, True):
            matches = value.lower().startswith(prefix.lower()) if ignore_case else value.startswith(prefix)
            found = patterns.ranges(prefix, ignore_case=ignore_case)
            if not matches or not found:
                continue
            encoded = value.encode("utf-8", "surrogatepass")
            assert any(
                low.encode() <= encoded and (high is None or encoded < high.encode("utf-8", "surrogatepass"))
                for low, high in found
            ), (value, prefix, ignore_case, found)


def test_literal_prefixes() -> None:
    assert patterns.like_prefix("ab%c") == "ab"
    assert patterns.like_prefix("a\\%b_") == "a%b"
    assert patterns.like_prefix("%ab") == ""
    assert patterns.regex_prefix("^abc.*") == "abc"
    assert patterns.regex_prefix("^abc*") == "ab"
    assert patterns.regex_prefix("^ab{2}") == "a"
    assert patterns.regex_prefix("abc") == ""
    assert patterns.regex_prefix("^ab|cd") == ""
    assert patterns.regex_prefix("^ab(c|d)") == "ab"
    assert patterns.regex_prefix("^a[|]") == "a"
    assert patterns.successor("ab") == "ac"
    assert patterns.successor("a\U0010ffff") == "b"
    assert patterns.successor("\ud7ff") == "\ue000"
    assert patterns.successor("\U0010ffff") is None
    assert patterns.case_prefixes("ab1") == ["AB1", "Ab1", "aB1", "ab1"]
    assert len(patterns.case_prefixes("kkkk")) <= patterns.MAX_RANGES


# -- the anonymous count, timeout and share --------------------------------------------------------------

MANY_SQL = """
create function gwtest.many() returns setof integer language plpgsql rows 10
as $$ begin return query select generate_series(1, 5000); end $$;
create view api.gw_many with (security_barrier) as select g from gwtest.many() as g;
comment on view api.gw_many is 'Five thousand rows the planner thinks are ten.';
grant select on api.gw_many to app_readonly, app_readwrite;
create function api.gw_wait(seconds double precision default 0) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform pg_catalog.pg_advisory_xact_lock_shared(20261204);
  perform pg_catalog.pg_sleep(gw_wait.seconds);
  return pg_catalog.jsonb_build_object('waited', true);
end;
$$;
comment on function api.gw_wait(double precision) is 'Waits for the test''s lock, then sleeps.';
revoke all on function api.gw_wait(double precision) from public;
grant execute on function api.gw_wait(double precision) to app_readonly, app_readwrite;
"""


@pytest.fixture
def shop(gw_fresh: GatewayDb) -> tuple[GatewayDb, Settings]:
    with psycopg.connect(gw_fresh.admin_url, autocommit=True) as conn:
        conn.execute(MANY_SQL)
    return gw_fresh, settings_for(gw_fresh)


async def test_anonymous_exact_count_falls_back_to_the_plan_above_the_limit(
    shop: tuple[GatewayDb, Settings],
) -> None:
    database, settings = shop
    async with serve(create_app(settings)) as http:
        user = await signup(http)
        customer = await bearer(http, user["email"])
        exact = {"Prefer": "count=exact", "Range": "0-1"}
        signed_in = await http.get("/gw_many", headers={**exact, **customer})
        assert signed_in.headers["content-range"] == "0-1/5000"
        http.cookies.clear()
        # anonymous: counted up to 1000 rows, then the planner's estimate (the function's ROWS 10)
        assert (await http.get("/gw_many", headers=exact)).headers["content-range"] == "0-1/10"
        below = await http.get("/gw_many?g=lte.700", headers=exact)
        assert below.headers["content-range"] == "0-1/700"
        planned = await http.get("/gw_many", headers={**exact, "Prefer": "count=planned"})
        assert planned.headers["content-range"] == "0-1/10"
    limits = AnonymousLimits(count_limit=100)
    async with serve(create_app(settings_for(database, anonymous=limits))) as http:
        response = await http.get("/gw_many?g=lte.700", headers={"Prefer": "count=exact"})
        total = int(response.headers["content-range"].rpartition("/")[2])
        assert total < 100, response.headers  # the planner's guess, not the 700 rows a count would find


async def test_anonymous_statement_timeout(shop: tuple[GatewayDb, Settings]) -> None:
    database, _ = shop
    settings = settings_for(database, anonymous=AnonymousLimits(statement_timeout=0.3))
    async with serve(create_app(settings)) as http:
        user = await signup(http)
        customer = await bearer(http, user["email"])
        http.cookies.clear()
        started = time.monotonic()
        cut = await http.post("/rpc/gw_wait", json={"seconds": 3})
        assert cut.status_code == 504, cut.text
        assert cut.json()["code"] == "57014"
        assert time.monotonic() - started < 2.5
        # a signed-in customer runs under their role's own timeout (5 s)
        assert (await http.post("/rpc/gw_wait", json={"seconds": 0.5}, headers=customer)).status_code == 200


def test_the_shorter_timeout_holds() -> None:
    limits = AnonymousLimits(statement_timeout=1.0)
    capped = anonymous.role_settings({"app_readonly": {"statement_timeout": "3s"}}, limits)
    assert capped["app_readonly"] == {"statement_timeout": "1000ms", "max_parallel_workers_per_gather": "0"}
    own = anonymous.role_settings({"app_readonly": {"statement_timeout": "300ms"}}, limits)
    assert own["app_readonly"]["statement_timeout"] == "300ms"
    assert anonymous.role_settings({}, limits)["app_readonly"]["statement_timeout"] == "1000ms"
    off = anonymous.role_settings({"app_readonly": {"statement_timeout": "0"}}, limits)
    assert off["app_readonly"]["statement_timeout"] == "1000ms"
    none = anonymous.role_settings({"app_readonly": {"statement_timeout": "2min"}}, AnonymousLimits(0))
    assert none["app_readonly"]["statement_timeout"] == "2min"
    signed_in = anonymous.role_settings({"app_readwrite": {"statement_timeout": "5s"}}, limits)
    assert signed_in["app_readwrite"] == {"statement_timeout": "5s"}
    assert anonymous.milliseconds("1.5min") == 90_000
    assert anonymous.milliseconds("nonsense") is None


def waiting(database: GatewayDb) -> int:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where wait_event = 'advisory' and query like '%gw_wait%'"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_anonymous_requests_hold_at_most_their_share_of_the_pool(
    shop: tuple[GatewayDb, Settings],
) -> None:
    database, _ = shop
    limits = AnonymousLimits(statement_timeout=0, pool_share=0.5, wait=0.3)
    # the pool's own timeout far above the share's wait, so that which of the two answered shows
    settings = settings_for(database, pool_min=4, pool_max=4, pool_timeout=30.0, anonymous=limits)
    async with serve(create_app(settings)) as http:
        user = await signup(http)
        customer = await bearer(http, user["email"])
        http.cookies.clear()
        share = gateway_of(http).anonymous
        assert share.places == 2
        with psycopg.connect(database.admin_url, autocommit=True) as lock:
            lock.execute("select pg_advisory_lock(20261204)")
            holders = [asyncio.create_task(http.post("/rpc/gw_wait", json={})) for _ in range(2)]
            try:
                await refused_beyond_the_share(http, database, share, customer)
            finally:
                # a failed check must not leave the two requests behind for the tests after it
                lock.execute("select pg_advisory_unlock_all()")
                answers = await asyncio.gather(*holders)
        assert [a.status_code for a in answers] == [200, 200]
        assert share.in_use == 0
        assert (await http.get("/products?limit=1")).status_code == 200


async def refused_beyond_the_share(
    http: httpx.AsyncClient, database: GatewayDb, share: anonymous.AnonymousShare, customer: dict[str, str]
) -> None:
    """With two anonymous requests holding the share: a third is refused after the share's wait (not the
    pool's timeout), a signed-in customer is served at once."""
    deadline = time.monotonic() + 15
    while waiting(database) < 2:
        assert time.monotonic() < deadline, "the two anonymous requests never reached the database"
        await asyncio.sleep(0.02)
    assert share.in_use == 2
    # a third anonymous request waits its short while, then 503 naming the limit
    started = time.monotonic()
    refused = await http.get("/products?limit=1")
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["details"] == {
        "code": "unavailable",
        "reason": "anonymous_share",
        "limit": 2,
    }
    assert 0.25 <= time.monotonic() - started < 25
    # a signed-in customer still gets a connection, at once
    mine = await http.get("/orders", headers=customer)
    assert mine.status_code == 200, mine.text


def test_anonymous_settings_from_the_environment() -> None:
    env = {
        "DATABASE_URL": "postgresql://authenticator@127.0.0.1/x",
        "COMMERCECORE_DEMO": "1",
        "COMMERCECORE_ANONYMOUS_STATEMENT_TIMEOUT": "0.5",
        "COMMERCECORE_ANONYMOUS_POOL_SHARE": "0.25",
        "COMMERCECORE_ANONYMOUS_WAIT": "2",
        "COMMERCECORE_ANONYMOUS_COUNT_LIMIT": "50",
    }
    limits = Settings.from_env(env).anonymous
    assert limits == AnonymousLimits(statement_timeout=0.5, pool_share=0.25, wait=2.0, count_limit=50)
    assert limits.connections(10) == 2
    assert limits.connections(2) == 1
    assert Settings.from_env({"DATABASE_URL": env["DATABASE_URL"], "COMMERCECORE_DEMO": "1"}).anonymous == (
        AnonymousLimits(statement_timeout=1.0, pool_share=0.5, wait=1.0, count_limit=1000)
    )
    with pytest.raises(SettingsError, match="COMMERCECORE_ANONYMOUS_POOL_SHARE"):
        Settings.from_env({**env, "COMMERCECORE_ANONYMOUS_POOL_SHARE": "1.5"})
