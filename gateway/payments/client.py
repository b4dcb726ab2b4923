"""The one way to build a `stripe.StripeClient`: explicit retries and timeouts, the stand-in's API base."""

from __future__ import annotations

import stripe
from stripe._base_address import BaseAddresses

from gateway.payments.config import PaymentSettings, check_api_base


def make_client(
    api_key: str,
    *,
    api_base: str | None = None,
    max_network_retries: int = 2,
    timeout: float = 30.0,
) -> stripe.StripeClient:
    """A StripeClient (SDK 16 services: `client.v1.checkout.sessions`, `client.v1.refunds`, ...).

    `max_network_retries` is explicit: the SDK retries connection errors, 409 and 5xx answers with the same
    Idempotency-Key (it makes one up for POSTs that have none), with exponential backoff from 0.5 s.
    `api_base` points the client at the local stand-in (tests, demo mode); None is Stripe itself.
    """
    base_addresses: BaseAddresses = {}
    if api_base:
        base_addresses["api"] = check_api_base(api_base)
    return stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,
        max_network_retries=max_network_retries,
        # requests is a dependency of stripe; (connect, read) timeouts instead of the SDK's 80 s
        http_client=stripe.RequestsClient(timeout=(min(5.0, timeout), timeout)),
    )


def client_from_settings(settings: PaymentSettings) -> stripe.StripeClient:
    return make_client(
        settings.secret_key,
        api_base=settings.api_base,
        max_network_retries=settings.max_network_retries,
        timeout=settings.timeout,
    )
