"""Operations without SQL by hand: the first staff account made by `commercecore users create` signs in over
HTTP and works as staff; `users set-role` and `users disable` end its sessions; bad input is one line and
exit 2. Staff create and change categories over HTTP (customers and visitors are refused), and read a
product's stock ledger page by page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result

from commercecore.cli import main
from tests.gateway.conftest import GatewayDb, bearer, make_admin, signup

pytestmark = pytest.mark.anyio

STAFF_PASSWORD = "staff password " + uuid.uuid4().hex[:8]


def users(database: GatewayDb, *args: str, password: str | None = None) -> Result:
    """`commercecore users ...` on the clone as its superuser; the password on stdin, never in argv."""
    return CliRunner().invoke(
        main, ["users", *args, "--database-url", database.admin_url], input=password, catch_exceptions=False
    )


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def staff_email() -> Iterator[str]:
    return f"staff-{uuid.uuid4().hex[:10]}@example.com"


async def staff_headers(client: httpx.AsyncClient, database: GatewayDb) -> dict[str, str]:
    user = await signup(client, f"cat-staff-{uuid.uuid4().hex[:8]}@example.com")
    make_admin(database, user["id"])
    client.cookies.clear()
    return await bearer(client, user["email"])


async def customer_headers(client: httpx.AsyncClient) -> dict[str, str]:
    user = await signup(client)
    client.cookies.clear()
    return await bearer(client, user["email"])


# -- commercecore users -------------------------------------------------------------------------------


async def test_the_first_staff_account_signs_in_over_http(
    fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb, staff_email: str
) -> None:
    created = users(
        gw_fresh, "create", "--email", staff_email, "--role", "app_admin", password=STAFF_PASSWORD + "\n"
    )
    assert created.exit_code == 0, created.output
    assert f"created: {staff_email}" in created.output
    assert "app_admin" in created.output
    assert STAFF_PASSWORD not in created.output

    login = await fresh_client.post("/auth/login", json={"email": staff_email, "password": STAFF_PASSWORD})
    assert login.status_code == 200, login.text
    assert (login.json()["email"], login.json()["role"]) == (staff_email, "app_admin")
    fresh_client.cookies.clear()
    headers = await bearer(fresh_client, staff_email, STAFF_PASSWORD)
    # staff work: a category, which a customer may not create
    category = await fresh_client.post(
        "/categories", json={"slug": f"s-{uuid.uuid4().hex[:6]}", "name": "Staff made"}, headers=headers
    )
    assert category.status_code == 201, category.text

    listed = users(gw_fresh, "list", "--role", "app_admin", "--json")
    assert listed.exit_code == 0, listed.output
    assert staff_email in listed.output
    customers = users(gw_fresh, "list", "--role", "app_readwrite")
    assert customers.exit_code == 0
    assert staff_email not in customers.output


async def test_set_role_and_disable_end_the_sessions(
    fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb, staff_email: str
) -> None:
    assert (
        users(
            gw_fresh, "create", "--email", staff_email, "--role", "app_admin", password=STAFF_PASSWORD
        ).exit_code
        == 0
    )
    headers = await bearer(fresh_client, staff_email, STAFF_PASSWORD)
    assert (await fresh_client.get("/me", headers=headers)).status_code == 200

    demoted = users(gw_fresh, "set-role", "--email", staff_email, "--role", "app_readwrite")
    assert demoted.exit_code == 0, demoted.output
    assert "1 session revoked" in demoted.output
    assert (await fresh_client.get("/me", headers=headers)).status_code == 401
    headers = await bearer(fresh_client, staff_email, STAFF_PASSWORD)
    me = await fresh_client.get("/me", headers=headers)
    assert me.json()["role"] == "app_readwrite"

    disabled = users(gw_fresh, "disable", "--email", staff_email)
    assert disabled.exit_code == 0, disabled.output
    assert "disabled" in disabled.output
    assert (await fresh_client.get("/me", headers=headers)).status_code == 401
    refused = await fresh_client.post("/auth/token", json={"email": staff_email, "password": STAFF_PASSWORD})
    assert refused.status_code == 401, refused.text

    assert users(gw_fresh, "enable", "--email", staff_email).exit_code == 0
    assert (await bearer(fresh_client, staff_email, STAFF_PASSWORD))["Authorization"].startswith("Bearer ")


def test_bad_input_is_one_line_and_exit_2(gw_fresh: GatewayDb, staff_email: str) -> None:
    role = one_line_error(
        users(gw_fresh, "create", "--email", staff_email, "--role", "root", password=STAFF_PASSWORD)
    )
    assert "app_readwrite or app_admin" in role
    short = one_line_error(
        users(gw_fresh, "create", "--email", staff_email, "--role", "app_admin", password="short")
    )
    assert "at least 10 characters" in short
    address = one_line_error(
        users(gw_fresh, "create", "--email", "nobody", "--role", "app_admin", password=STAFF_PASSWORD)
    )
    assert "email address is not valid" in address
    assert "required" in one_line_error(
        users(gw_fresh, "create", "--role", "app_admin", password=STAFF_PASSWORD)
    )
    assert (
        users(
            gw_fresh, "create", "--email", staff_email, "--role", "app_admin", password=STAFF_PASSWORD
        ).exit_code
        == 0
    )
    taken = one_line_error(
        users(gw_fresh, "create", "--email", staff_email, "--role", "app_admin", password=STAFF_PASSWORD)
    )
    assert "already has an account" in taken
    unknown = one_line_error(users(gw_fresh, "disable", "--email", f"x{staff_email}"))
    assert "no account" in unknown
    assert "app_readwrite or app_admin" in one_line_error(users(gw_fresh, "list", "--role", "owner"))


def test_the_prompt_asks_twice_on_a_terminal(
    gw_fresh: GatewayDb, staff_email: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([STAFF_PASSWORD, STAFF_PASSWORD + "typo"])
    monkeypatch.setattr("commercecore.cli.users.getpass.getpass", lambda prompt: next(answers))
    monkeypatch.setattr("commercecore.cli.users.stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(
        main,
        [
            "users",
            "create",
            "--email",
            staff_email,
            "--role",
            "app_admin",
            "--database-url",
            gw_fresh.admin_url,
        ],
    )
    assert "the two passwords differ" in one_line_error(result)
    with psycopg.connect(gw_fresh.admin_url) as conn:
        assert conn.execute("select count(*) from core.users where email = %s", [staff_email]).fetchone() == (
            0,
        )


# -- categories ------------------------------------------------------------------------------------------


async def test_staff_create_and_change_categories(
    fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    staff = await staff_headers(fresh_client, gw_fresh)
    slug = f"shoes-{uuid.uuid4().hex[:6]}"
    created = await fresh_client.post(
        "/categories", json={"slug": slug, "name": "Shoes", "description": "For feet"}, headers=staff
    )
    assert created.status_code == 201, created.text
    shoes = created.json()
    assert created.headers["location"] == f"/categories?id=eq.{shoes['id']}"
    assert (shoes["slug"], shoes["name"], shoes["parent_id"]) == (slug, "Shoes", None)
    child = await fresh_client.post(
        "/categories",
        json={"slug": f"{slug}-running", "name": "Running", "parent_id": shoes["id"]},
        headers=staff,
    )
    assert child.status_code == 201, child.text
    running = child.json()

    renamed = await fresh_client.patch(
        f"/categories/{running['id']}", json={"name": "Running shoes"}, headers=staff
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["parent_id"]) == ("Running shoes", shoes["id"])
    top = await fresh_client.patch(
        f"/categories/{running['id']}", json={"unset": ["parent_id"]}, headers=staff
    )
    assert top.json()["parent_id"] is None
    listed = await fresh_client.get(f"/categories?id=eq.{running['id']}")
    assert [(c["name"], c["parent_id"]) for c in listed.json()] == [("Running shoes", None)]


async def test_categories_refuse_bad_input_with_details(
    fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    staff = await staff_headers(fresh_client, gw_fresh)
    bad_slug = await fresh_client.post("/categories", json={"slug": "Not A Slug", "name": "x"}, headers=staff)
    assert bad_slug.status_code == 422, bad_slug.text
    assert bad_slug.json()["details"] == {
        "code": "invalid_input",
        "field": "slug",
        "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$",
        "max_length": 80,
    }
    long_name = await fresh_client.post("/categories", json={"slug": "ok", "name": "n" * 121}, headers=staff)
    assert long_name.json()["details"]["field"] == "name"
    assert long_name.json()["details"]["max_length"] == 120
    no_parent = await fresh_client.post(
        "/categories", json={"slug": "ok", "name": "x", "parent_id": -1}, headers=staff
    )
    assert (no_parent.status_code, no_parent.json()["details"]["field"]) == (422, "parent_id")

    slug = f"dup-{uuid.uuid4().hex[:6]}"
    first = (await fresh_client.post("/categories", json={"slug": slug, "name": "A"}, headers=staff)).json()
    duplicate = await fresh_client.post("/categories", json={"slug": slug, "name": "B"}, headers=staff)
    assert (duplicate.status_code, duplicate.json()["details"]["code"]) == (409, "duplicate_slug")
    child = (
        await fresh_client.post(
            "/categories", json={"slug": f"{slug}-c", "name": "C", "parent_id": first["id"]}, headers=staff
        )
    ).json()
    cycle = await fresh_client.patch(
        f"/categories/{first['id']}", json={"parent_id": child["id"]}, headers=staff
    )
    assert cycle.status_code == 422, cycle.text
    assert cycle.json()["details"] == {
        "code": "invalid_input",
        "field": "parent_id",
        "reason": "cycle",
        "value": child["id"],
    }
    missing = await fresh_client.patch("/categories/999999999", json={"name": "x"}, headers=staff)
    assert (missing.status_code, missing.json()["details"]["code"]) == (404, "not_found")
    unknown_field = await fresh_client.patch(
        f"/categories/{first['id']}", json={"colour": "red"}, headers=staff
    )
    assert unknown_field.status_code == 400


async def test_customers_and_visitors_may_not_change_categories(
    fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    customer = await customer_headers(fresh_client)
    refused = await fresh_client.post("/categories", json={"slug": "mine", "name": "Mine"}, headers=customer)
    assert refused.status_code == 403, refused.text
    assert (
        await fresh_client.patch("/categories/1", json={"name": "x"}, headers=customer)
    ).status_code == 403
    anonymous = await fresh_client.post("/categories", json={"slug": "anon", "name": "Anon"})
    assert anonymous.status_code == 401, anonymous.text
    with psycopg.connect(gw_fresh.admin_url) as conn:
        rows = conn.execute("select count(*) from core.categories where slug in ('mine', 'anon')").fetchone()
    assert rows == (0,)


# -- the stock ledger ------------------------------------------------------------------------------------


async def new_product_with_movements(
    client: httpx.AsyncClient, staff: dict[str, str], deltas: list[int]
) -> int:
    created = await client.post(
        "/products",
        json={"sku": f"LEDGER-{uuid.uuid4().hex[:8]}", "name": "Ledger", "price_minor": 100, "stock": 50},
        headers=staff,
    )
    assert created.status_code == 201, created.text
    product_id: int = created.json()["id"]
    for delta in deltas:
        moved = await client.post(
            f"/products/{product_id}/stock", json={"delta": delta, "reason": "adjustment"}, headers=staff
        )
        assert moved.status_code == 200, moved.text
    return product_id


async def test_the_ledger_in_keyset_pages(fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb) -> None:
    staff = await staff_headers(fresh_client, gw_fresh)
    deltas = [5, -3, 7, -2, 4]
    product_id = await new_product_with_movements(fresh_client, staff, deltas)

    seen: list[dict[str, Any]] = []
    url: str | None = f"/products/{product_id}/movements?page_size=2"
    pages = 0
    while url is not None:
        page = await fresh_client.get(url, headers=staff)
        assert page.status_code == 200, page.text
        seen.extend(page.json())
        pages += 1
        link = page.headers.get("link")
        url = link[1 : link.index(">")] if link else None
        assert pages <= 10
    # 6 movements (the initial stock first), newest first, each once, in 3 full pages and an empty one
    assert [m["delta"] for m in seen] == [*reversed(deltas), 50]
    assert [m["id"] for m in seen] == sorted((m["id"] for m in seen), reverse=True)
    assert pages == 4
    assert seen[-1]["reason"] == "restock"
    assert seen[0]["reason"] == "adjustment"
    product = (await fresh_client.get(f"/products/{product_id}", headers=staff)).json()
    assert product["stock"] == sum(m["delta"] for m in seen)

    # the read dialect applies to the page
    filtered = await fresh_client.get(
        f"/products/{product_id}/movements?select=id,delta&delta=lt.0&page_size=100", headers=staff
    )
    assert filtered.json() == [{"id": m["id"], "delta": m["delta"]} for m in seen if m["delta"] < 0]


async def test_the_ledger_is_for_staff_and_its_page_is_bounded(
    fresh_client: httpx.AsyncClient, gw_fresh: GatewayDb
) -> None:
    staff = await staff_headers(fresh_client, gw_fresh)
    product_id = await new_product_with_movements(fresh_client, staff, [1])
    too_big = await fresh_client.get(f"/products/{product_id}/movements?page_size=100000", headers=staff)
    assert too_big.status_code == 422, too_big.text
    assert too_big.json()["details"] == {
        "code": "invalid_input",
        "field": "page_size",
        "min": 1,
        "max": 1000,
        "value": 100000,
    }
    missing = await fresh_client.get("/products/999999999/movements", headers=staff)
    assert (missing.status_code, missing.json()["details"]["resource"]) == (404, "product")
    customer = await customer_headers(fresh_client)
    assert (await fresh_client.get(f"/products/{product_id}/movements", headers=customer)).status_code == 403
    assert (await fresh_client.get(f"/products/{product_id}/movements")).status_code == 401


async def test_the_routes_are_in_openapi(fresh_client: httpx.AsyncClient) -> None:
    paths = (await fresh_client.get("/openapi.json")).json()["paths"]
    assert "post" in paths["/categories"]
    assert "get" in paths["/categories"]
    assert "patch" in paths["/categories/{id}"]
    movements = paths["/products/{product_id}/movements"]["get"]
    assert {p["name"] for p in movements["parameters"]} >= {"product_id", "before_id", "page_size"}
