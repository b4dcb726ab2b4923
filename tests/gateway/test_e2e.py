"""End to end over real HTTP: uvicorn on 127.0.0.1, a browser-like cookie session, the PyPI PostgREST
client, schemathesis against /openapi.json, and /docs rendered by headless Chromium (no network)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from postgrest import SyncPostgrestClient
from postgrest.exceptions import APIError
from schemathesis.checks import positive_data_acceptance

from commercecore.local.embedded import free_port
from gateway.app import create_app
from tests.conftest import PgServer
from tests.gateway.conftest import PASSWORD, GatewayDb, clone_database, settings_for


class _Server(uvicorn.Server):
    """uvicorn that says when it listens (an Event, not a sleep loop)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@pytest.fixture(scope="module")
def e2e_db(pg: PgServer, template_db: str, authenticator_password: str) -> Iterator[GatewayDb]:
    name = f"cc_gwe_{uuid.uuid4().hex[:8]}"
    yield clone_database(pg, template_db, authenticator_password, name)
    pg.drop_db(name)


@pytest.fixture(scope="module")
def live(e2e_db: GatewayDb) -> Iterator[str]:
    """The gateway under uvicorn on a free loopback port; its base URL."""
    port = free_port()
    app = create_app(settings_for(e2e_db))
    server = _Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, server_header=False
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    if not server.ready.wait(timeout=30):
        pytest.fail("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_browser_session_over_real_http(live: str) -> None:
    with httpx.Client(base_url=live) as browser:
        health = browser.get("/health")
        assert health.status_code == 200
        assert health.headers["x-request-id"]
        assert "server" not in health.headers
        email = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
        signup = browser.post("/auth/signup", json={"email": email, "password": PASSWORD, "full_name": "E2E"})
        assert signup.status_code == 201
        assert browser.get("/me").json()["email"] == email
        refused = browser.patch("/me", json={"full_name": "No CSRF"})
        assert refused.status_code == 403
        changed = browser.patch(
            "/me", json={"full_name": "With CSRF"}, headers={"X-CSRF-Token": browser.cookies["cc_csrf"]}
        )
        assert changed.json()["full_name"] == "With CSRF"
        out = browser.post("/auth/logout", headers={"X-CSRF-Token": browser.cookies["cc_csrf"]})
        assert out.status_code == 204
        assert browser.get("/me").status_code == 401


def test_postgrest_client(live: str) -> None:
    client = SyncPostgrestClient(live, schema="api")
    try:
        result = (
            client.from_("products")
            .select("id,sku,price_minor", count="exact")  # type: ignore[arg-type]
            .gt("price_minor", 1000)
            .order("id")
            .limit(3)
            .execute()
        )
        assert [row["sku"] for row in result.data] == ["SKU-011", "SKU-012", "SKU-014"]
        assert result.count == 14  # 11..25 without the inactive 13
        names = client.from_("gw_things").select("name").in_("id", [1, 2]).order("id").execute()
        assert [row["name"] for row in names.data] == ["alpha", "beta"]
        ilike = client.from_("gw_things").select("id").ilike("name", "ALP*").execute()
        assert ilike.data == [{"id": 1}]
        nulls = client.from_("gw_things").select("id").is_("flag", "null").execute()
        assert nulls.data == [{"id": 3}]
        text = client.from_("gw_things").select("id").text_search("search", "foxes").order("id").execute()
        assert [row["id"] for row in text.data] == [3, 5]
        ored = client.from_("gw_things").select("id").or_("id.eq.1,id.eq.5").order("id").execute()
        assert [row["id"] for row in ored.data] == [1, 5]
        single = client.from_("gw_things").select("name").eq("id", 2).single().execute()
        assert single.data == {"name": "beta"}
        found = client.rpc("search_products", {"q": "shoe", "limit": 3}).execute()
        assert len(found.data) == 3
        assert all("shoe" in row["name"] for row in found.data)
        echoed = client.rpc("gw_echo", {"a": 5, "tags": ["x"]}).execute()
        assert echoed.data["tags"] == ["x"]
        with pytest.raises(APIError) as error:
            client.from_("gw_things").select("nope").execute()
        assert error.value.code == "42703"
    finally:
        client.session.close()


# -- schemathesis: generated requests for every operation of /openapi.json ---------------------------------


@pytest.fixture(scope="module")
def customer(live: str) -> dict[str, str]:
    """A signed-in customer's Bearer header, so the generated requests reach past the 401s."""
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=live) as http:
        assert http.post("/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 201
        token = http.post("/auth/token", json={"email": email, "password": PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _fuzz(operation: Any, headers: dict[str, str] | None) -> Any:
    @given(case=operation.as_strategy())
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: Any) -> None:
        # positive_data_acceptance wants 2xx for every schema-valid request: the database's own rules
        # (422 for an empty email, 404 for another user's order) rightly refuse many of them
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    return run


def test_generated_requests(live: str, customer: dict[str, str]) -> None:
    """Schemathesis over every documented operation: never a 5xx, and every answer matches the documented
    status codes, content type and response schema.

    Driven through Hypothesis directly: schemathesis' own pytest integration (`from_fixture`) reads a
    pytest-internal attribute that pytest 9 no longer has.
    """
    api = schemathesis.openapi.from_url(f"{live}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1
        # logout and password changes run anonymously: the customer's session must survive for the others
        anonymous = operation.path in ("/auth/logout", "/me/password")
        try:
            _fuzz(operation, None if anonymous else customer)()
        except (Exception, BaseExceptionGroup) as exc:  # collected: one report names every failing operation
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert operations > 40
    assert not failures, "\n\n".join(failures)


# -- /docs in a real browser -------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_docs_render_in_chromium_without_network(live: str, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian package chromium)")
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # everything but the gateway is unreachable: the page must not need a CDN
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1280,1600",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", f"{live}/docs"], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "CommerceCore DBX API" in dom.stdout
    assert "opblock" in dom.stdout  # Swagger UI rendered the operations
    assert "/orders/{order_id}/cancel" in dom.stdout
    screenshot = tmp_path / "docs.png"
    shot = subprocess.run(
        [*common, f"--screenshot={screenshot}", f"{live}/docs"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 20000
