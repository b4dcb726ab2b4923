"""The API's request as stages: one module per stage, each importing only the stages before it, none after
the request stage reaching for the Starlette request, a handler short enough to read at a glance; and the
values the stages hand on (ApiRequest, db.RequestContext) as the database and the plan read them."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from gateway import db, handler
from gateway.dialect import ReadOptions
from gateway.request import ApiRequest, headers_of, parse_prefer
from gateway.routes import Match, RouteTable
from gateway.schema_cache import SchemaCache
from tests.test_structure import imported_modules

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
# in the order a request goes through them
STAGES = ("request", "plan", "query", "execute", "response", "handler")


def gateway_imports(module: str) -> set[str]:
    source = (GATEWAY / f"{module}.py").read_text()
    return {name.removeprefix("gateway.") for name in imported_modules(source) if name.startswith("gateway.")}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_later_stage(stage: str) -> None:
    later = set(STAGES[STAGES.index(stage) + 1 :])
    assert gateway_imports(stage) & later == set()


@pytest.mark.parametrize("stage", STAGES[1:-1])
def test_only_the_request_stage_knows_the_starlette_request(stage: str) -> None:
    source = (GATEWAY / f"{stage}.py").read_text()
    assert "starlette.requests" not in set(imported_modules(source))
    assert "Request" not in {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def test_the_handler_calls_the_stages_in_a_few_lines() -> None:
    lines, _start = inspect.getsourcelines(handler.handle)
    assert len(lines) <= 30
    calls = sorted(
        (node.lineno, node.col_offset, node.func.id)
        for node in ast.walk(ast.parse(inspect.getsource(handler.handle)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    )
    stages = ("read_request", "make_plan", "build_query", "execute", "respond")
    # build_query(make_plan(...)): the outer call starts first on the line
    assert [name for _line, _column, name in calls if name in stages] == [
        "read_request",
        "build_query",
        "make_plan",
        "execute",
        "respond",
    ]


def api_request(**fields: object) -> ApiRequest:
    schema = SchemaCache()
    values: dict[str, object] = {
        "method": "GET",
        "path": "/things",
        "url_path": "/things",
        "query_string": b"",
        "headers": {},
        "request_id": "r1",
        "schema": schema,
        "routes": RouteTable(schema),
        "target": Match(),
    }
    values.update(fields)
    return ApiRequest(**values)  # type: ignore[arg-type]


def test_an_api_request_is_a_frozen_value() -> None:
    api = api_request()
    with pytest.raises(dataclasses.FrozenInstanceError):
        api.method = "POST"  # type: ignore[misc]


def test_the_query_string_is_parsed_as_starlette_parses_it() -> None:
    api = api_request(query_string=b"a=1&b=&a=2&c=%20x+y&flag")
    assert api.query == (("a", "1"), ("b", ""), ("a", "2"), ("c", " x y"), ("flag", ""))


def test_the_read_options_come_from_range_prefer_and_accept() -> None:
    headers = {
        "range": "0-9",
        "range-unit": "Items",
        "prefer": "return=minimal, Count=Exact",
        "accept": "application/vnd.pgrst.object+json",
    }
    api = api_request(method="HEAD", headers=headers)
    assert api.read_options == ReadOptions(range="0-9", range_unit="Items", count="exact", singular=True)
    assert api.head
    assert api.read_method == "GET"
    assert api_request().read_options == ReadOptions()


def test_the_read_key_tells_callers_and_shaping_headers_apart() -> None:
    anonymous = api_request(query_string=b"select=id")
    signed_in = dataclasses.replace(anonymous, identity=db.Identity("app_readwrite", {}, jti="j", user_id=1))
    counted = dataclasses.replace(anonymous, headers={"prefer": "count=exact"})
    keys = {anonymous.read_key, signed_in.read_key, counted.read_key}
    assert len(keys) == 3
    assert api_request(query_string=b"select=id").read_key == anonymous.read_key


def test_headers_keep_the_first_of_repeated_ones_under_lower_case_names() -> None:
    scope = {"headers": [(b"prefer", b"count=exact"), (b"x-a", b"1"), (b"prefer", b"count=planned")]}
    assert headers_of(scope) == {"prefer": "count=exact", "x-a": "1"}
    assert parse_prefer(" count = exact ,, return=representation") == {
        "count": "exact",
        "return": "representation",
    }


# -- the context of a transaction ------------------------------------------------------------------------

CUSTOMER = db.Identity("app_readwrite", {"role": "app_readwrite", "sub": "7"}, jti="j", user_id=7)
ROLE_SETTINGS = {"app_readwrite": {"statement_timeout": "5s"}}
SHOP = (("commercecore.max_open_orders", "5"),)


def pairs(context: db.RequestContext) -> list[tuple[str, str]]:
    flat = context.settings()
    return list(zip(flat[::2], flat[1::2], strict=True))


def test_a_write_sets_the_role_claims_request_role_settings_and_shop() -> None:
    context = db.RequestContext(CUSTOMER, False, "r1", "POST", "/orders", ROLE_SETTINGS, SHOP)
    assert pairs(context) == [
        ("role", "app_readwrite"),
        ("request.jwt.claims", '{"role":"app_readwrite","sub":"7"}'),
        ("request.id", "r1"),
        ("request.method", "POST"),
        ("request.path", "/orders"),
        ("statement_timeout", "5s"),
        ("commercecore.max_open_orders", "5"),
    ]


def test_a_read_leaves_the_shop_settings_out() -> None:
    context = db.RequestContext(CUSTOMER, True, "r1", "GET", "/me", ROLE_SETTINGS, SHOP)
    assert ("commercecore.max_open_orders", "5") not in pairs(context)
    assert ("statement_timeout", "5s") in pairs(context)


def test_the_gateways_own_calls_set_the_request_only() -> None:
    request = [("request.id", "r1"), ("request.method", "POST"), ("request.path", "/auth/logout")]
    authenticator = db.RequestContext(None, False, "r1", "POST", "/auth/logout", ROLE_SETTINGS, SHOP)
    service = dataclasses.replace(authenticator, identity=CUSTOMER, as_service=True)
    assert pairs(authenticator) == pairs(service) == request


def test_only_a_request_role_is_set() -> None:
    owner = db.Identity("app_owner", {"role": "app_owner"}, jti="j", user_id=1)
    with pytest.raises(ValueError, match="not a request role"):
        db.RequestContext(owner, True).settings()
