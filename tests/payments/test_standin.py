"""The stand-in speaks Stripe as the real SDK expects it: object shapes, errors and their exceptions,
Idempotency-Key semantics, accounts, and the hosted page."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from commercecore.standin import start_demo_standin
from commercecore.standin.forms import decode
from gateway.payments.client import make_client
from gateway.payments.config import DEMO_SECRET_KEY
from tests.conftest import stripe_client
from tests.payments.conftest import Servers, new_api_key


@pytest.fixture
def client(servers: Servers) -> Iterator[stripe.StripeClient]:
    with stripe_client(new_api_key(), servers.standin.url) as sync_client:
        yield sync_client


def session_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 2,
                "price_data": {"currency": "eur", "unit_amount": 450, "product_data": {"name": "Socks"}},
            }
        ],
        "client_reference_id": "42",
        "metadata": {"order_id": "7", "payment_id": "42"},
        "success_url": "http://shop.test/ok?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/cancel",
        "expires_at": int(time.time()) + 3600,
    }
    params.update(overrides)
    return params


def test_session_shape(client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    assert session.object == "checkout.session"
    assert session.id.startswith("cs_test_")
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_total, session.currency) == (900, "eur")
    assert session.payment_intent is None
    assert session.url is not None
    assert session.url.endswith(f"/pay/{session.id}")
    assert client.v1.checkout.sessions.retrieve(session.id).to_dict() == session.to_dict()


def test_idempotency_key_semantics(client: stripe.StripeClient) -> None:
    key = f"checkout_{time.time_ns()}"
    first = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert first.last_response is not None
    assert "idempotent-replayed" not in first.last_response.headers
    again = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["idempotent-replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError) as info:
        client.v1.checkout.sessions.create(
            session_params(client_reference_id="43"),
            {"idempotency_key": key},
        )
    assert info.value.http_status == 400
    assert key in str(info.value.user_message)
    # a request refused at validation is not saved under its key (Stripe's rule): fixing it may reuse the key
    other = f"checkout_{time.time_ns()}"
    with pytest.raises(stripe.InvalidRequestError) as invalid:
        client.v1.checkout.sessions.create(session_params(mode=None), {"idempotency_key": other})
    assert (invalid.value.param, invalid.value.code) == ("mode", "parameter_missing")
    assert client.v1.checkout.sessions.create(session_params(), {"idempotency_key": other}).id != first.id


def test_errors_as_the_sdk_raises_them(servers: Servers, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(session_params(expires_at=int(time.time()) + 600))
    assert (info.value.http_status, info.value.param) == (400, "expires_at")
    assert info.value.error is not None
    assert info.value.error.type == "invalid_request_error"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(session_params(line_items=None))
    assert info.value.param == "line_items"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create({"email": "a@example.com"})
    assert info.value.http_status == 404
    with (
        stripe_client("sk_live_not_a_test_key", servers.standin.url) as stranger,
        pytest.raises(stripe.AuthenticationError),
    ):
        stranger.v1.checkout.sessions.create(session_params())
    # another account's objects do not exist for this one
    session = client.v1.checkout.sessions.create(session_params())
    with (
        stripe_client(new_api_key(), servers.standin.url) as other_account,
        pytest.raises(stripe.InvalidRequestError) as info,
    ):
        other_account.v1.checkout.sessions.retrieve(session.id)
    assert info.value.http_status == 404


def test_the_gateways_asynchronous_client(servers: Servers) -> None:
    """The gateway's client (HTTPX, the SDK's `_async` methods) speaks to the stand-in as the synchronous
    one does: form-encoded bodies, the same objects and errors, its connections closed by `aclose`."""

    async def exchange() -> tuple[Any, Any]:
        client = make_client(new_api_key(), api_base=servers.standin.url, max_network_retries=0)
        try:
            created = await client.v1.checkout.sessions.create_async(session_params())
            again = await client.v1.checkout.sessions.retrieve_async(created.id)
            with pytest.raises(stripe.InvalidRequestError) as info:
                await client.v1.checkout.sessions.retrieve_async("cs_test_nope")
            assert (info.value.http_status, info.value.code) == (404, "resource_missing")
            return created, again
        finally:
            await client.aclose()

    created, again = asyncio.run(exchange())
    assert again.to_dict() == created.to_dict()
    assert created.to_dict()["metadata"] == {"order_id": "7", "payment_id": "42"}
    assert created.amount_total == 900


def test_expire(client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    expired = client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.expire(session.id)
    assert 'status of "expired"' in str(info.value.user_message)


def test_refunds(servers: Servers, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    with httpx.Client(base_url=servers.standin.url) as control:
        assert control.post(f"/_standin/sessions/{session.id}/decline").status_code == 200
        declined = client.v1.checkout.sessions.retrieve(session.id)
        assert declined.status == "open"
        assert isinstance(declined.payment_intent, str)
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.refunds.create({"payment_intent": declined.payment_intent})
        assert info.value.code == "charge_not_refundable"
        assert control.post(f"/_standin/sessions/{session.id}/complete").status_code == 200
    paid = client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert isinstance(paid.payment_intent, str)
    intent = client.v1.payment_intents.retrieve(paid.payment_intent)
    assert (intent.status, intent.amount_received) == ("succeeded", 900)
    assert isinstance(intent.latest_charge, str)

    part = client.v1.refunds.create(
        {"payment_intent": paid.payment_intent, "amount": 400, "reason": "duplicate"}
    )
    assert (part.object, part.status, part.amount, part.charge) == (
        "refund",
        "succeeded",
        400,
        intent.latest_charge,
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create({"charge": intent.latest_charge, "amount": 600})
    assert (info.value.code, info.value.param) == ("amount_too_large", "amount")
    rest = client.v1.refunds.create({"charge": intent.latest_charge})
    assert rest.amount == 500
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (900, True)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create({"payment_intent": paid.payment_intent})
    assert info.value.code == "charge_already_refunded"
    assert client.v1.refunds.retrieve(part.id).amount == 400
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create({})


def test_hosted_page(servers: Servers, client: stripe.StripeClient) -> None:
    assert httpx.get(f"{servers.standin.url}/pay/cs_test_missing").status_code == 404
    session = client.v1.checkout.sessions.create(session_params())
    assert session.url is not None
    page = httpx.get(session.url)
    assert "Socks &times; 2" in page.text
    assert "9.00 EUR" in page.text
    client.v1.checkout.sessions.expire(session.id)
    assert "expired" in httpx.get(session.url).text
    late = httpx.post(f"{servers.standin.url}/pay/{session.id}", data={"action": "pay", "method": "card"})
    assert late.status_code == 409


def test_form_decoding() -> None:
    body = (
        "mode=payment&line_items[0][quantity]=2&line_items[0][price_data][currency]=eur"
        "&line_items[1][quantity]=1&metadata[order_id]=7&expand[]=a&expand[]=b&empty="
    )
    assert decode(body) == {
        "mode": "payment",
        "line_items": [{"quantity": "2", "price_data": {"currency": "eur"}}, {"quantity": "1"}],
        "metadata": {"order_id": "7"},
        "expand": ["a", "b"],
        "empty": "",
    }


def test_demo_standin_and_command_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_demo_standin("http://127.0.0.1:8000", {"STRIPE_API_BASE": f"http://127.0.0.1:{port}"})
    assert server is not None
    try:
        assert server.url == f"http://127.0.0.1:{port}"
        with stripe_client(DEMO_SECRET_KEY, server.url) as demo:
            session = demo.v1.checkout.sessions.create(session_params())
        assert session.url == f"{server.url}/pay/{session.id}"
        endpoint = httpx.get(f"{server.url}/_standin/delivery").json()
        assert endpoint == {"enabled": True, "url": "http://127.0.0.1:8000/webhooks/stripe"}
    finally:
        server.stop()
    assert start_demo_standin("http://x", {"STRIPE_API_BASE": "https://api.stripe.com"}) is None

    refused = subprocess.run(
        [sys.executable, "-m", "commercecore.standin", "--host", "0.0.0.0", "--webhook-secret", "whsec_x"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2
    assert "loopback" in refused.stderr
