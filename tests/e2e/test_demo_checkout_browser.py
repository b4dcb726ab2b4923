"""Demo mode in a real browser (Debian chromium, headless): log in, order, open the checkout URL, press
Pay on the local Stripe stand-in's page, and the order shows `paid`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from commercecore.local import seed
from tests.e2e.stack import free_ports, running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the closed network of CI: no background fetches, updates or sync
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium)")


def order_status(page: Any, base_url: str, order_id: int, deadline_s: float = 30) -> str:
    """The order as the browser's session sees it, polled until paid or the deadline (webhooks are async)."""
    deadline = time.monotonic() + deadline_s
    status = ""
    while time.monotonic() < deadline:
        response = page.request.get(f"{base_url}/orders/{order_id}")
        assert response.status == 200, response.text()
        status = response.json()["status"]
        if status != "pending":
            return status
        time.sleep(0.2)
    return status


def test_login_order_pay_in_the_browser(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    email, password, _name, _role = seed.DEMO_USERS[0]
    stack = free_ports(tmp_path)
    with running(stack) as health, playwright.sync_playwright() as p:
        assert health.status_code == 200
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            base = stack.base_url
            # the browser's own cookie jar carries the session: page.request shares it with the page
            login = page.request.post(f"{base}/auth/login", data={"email": email, "password": password})
            assert login.status == 200, login.text()
            cookies = {c["name"]: c["value"] for c in context.cookies()}
            assert "cc_session" in cookies
            csrf = {"X-CSRF-Token": cookies["cc_csrf"]}
            product = page.request.get(f"{base}/products?stock=gt.0&order=id&limit=1").json()[0]
            order = page.request.post(
                f"{base}/orders", data={"items": [{"product_id": product["id"], "quantity": 1}]}, headers=csrf
            )
            assert order.status == 201, order.text()
            order_id = order.json()["id"]
            checkout = page.request.post(f"{base}/orders/{order_id}/checkout", headers=csrf)
            assert checkout.status == 201, checkout.text()

            page.goto(checkout.json()["checkout_url"])
            assert page.get_by_role("button", name="Pay").is_visible()
            page.screenshot(path=str(tmp_path / "checkout.png"))
            page.get_by_role("button", name="Pay").click()
            page.wait_for_url(f"{base}/checkout/success*")

            assert order_status(page, base, order_id) == "paid"
            payments = page.request.get(f"{base}/orders/{order_id}/payments").json()
            assert [p["status"] for p in payments] == ["succeeded"]
            assert payments[0]["amount_minor"] == product["price_minor"]
        finally:
            browser.close()
