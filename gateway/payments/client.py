"""The one way to build a `stripe.StripeClient`: the SDK's asynchronous API over HTTPX (the Stripe paths run
on the gateway's event loop), explicit retries and timeouts, the stand-in's API base."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import stripe
from stripe._base_address import BaseAddresses

from gateway.payments.config import PaymentSettings, check_api_base


class _HTTPXClient(stripe.HTTPXClient):
    """The SDK's HTTPX client, sending the form-encoded body as `content`: HTTPX deprecates a text body
    passed as `data` (the SDK's way), which would warn on every call."""

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if data:
            kwargs["content"] = data
        return [args, kwargs]


class StripeClient(stripe.StripeClient):
    """A StripeClient that closes its connections (`aclose`, on the event loop that used them)."""

    def __init__(self, api_key: str, *, http: stripe.HTTPXClient, **options: Any) -> None:
        super().__init__(api_key, http_client=http, **options)
        self.http = http

    async def aclose(self) -> None:
        # the SDK leaves it unannotated
        await self.http.close_async()  # type: ignore[no-untyped-call]


def make_client(
    api_key: str,
    *,
    api_base: str | None = None,
    max_network_retries: int = 2,
    timeout: float = 30.0,
) -> StripeClient:
    """A StripeClient (SDK 16 services, `_async` methods: `client.v1.checkout.sessions.create_async`, ...).

    `max_network_retries` is explicit: the SDK retries connection errors, 409 and 5xx answers with the same
    Idempotency-Key (it makes one up for POSTs that have none), with exponential backoff from 0.5 s.
    `api_base` points the client at the local stand-in (tests, demo mode); None is Stripe itself. Only the
    asynchronous methods work (no thread ever waits on Stripe); close it with `aclose()`.
    """
    base_addresses: BaseAddresses = {}
    if api_base:
        base_addresses["api"] = check_api_base(api_base)
    # connect and read timeouts instead of the SDK's 80 s
    http = _HTTPXClient(timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)))
    return StripeClient(
        api_key, http=http, base_addresses=base_addresses, max_network_retries=max_network_retries
    )


def client_from_settings(settings: PaymentSettings) -> StripeClient:
    return make_client(
        settings.secret_key,
        api_base=settings.api_base,
        max_network_retries=settings.max_network_retries,
        timeout=settings.timeout,
    )
