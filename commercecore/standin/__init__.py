"""A local stand-in for the parts of Stripe CommerceCore uses: Checkout Sessions with a hosted Pay/Decline
page, refunds, signed webhooks, Stripe's error format and Idempotency-Key semantics. For tests and demo mode;
never an imitation of Stripe's security: it runs on 127.0.0.1 with test keys only.

    python -m commercecore.standin --port 12111 --webhook-url http://127.0.0.1:8000/webhooks/stripe \\
        --webhook-secret whsec_...
"""

import os
from urllib.parse import urlsplit

from commercecore.standin.app import create_app
from commercecore.standin.server import BackgroundServer
from commercecore.standin.state import StandinState


def start_standin(
    *,
    webhook_secret: str,
    webhook_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
) -> tuple[BackgroundServer, StandinState]:
    """Starts the stand-in in a background thread (port 0: any free port); returns the server (its `url` is
    the STRIPE_API_BASE) and the state. Stop it with `server.stop()`."""
    state = StandinState(webhook_secret=webhook_secret, webhook_url=webhook_url, api_key=api_key)
    server = BackgroundServer(create_app(state), host=host, port=port)
    state.base_url = server.url
    server.start()
    return server, state


def start_demo_standin(gateway_url: str, environ: dict[str, str] | None = None) -> BackgroundServer | None:
    """The stand-in of demo mode (`make run`): listening where the demo STRIPE_API_BASE points
    (http://127.0.0.1:12111 unless set), delivering to `{gateway_url}/webhooks/stripe`, signed with the demo
    STRIPE_WEBHOOK_SECRET (or the one set). None when STRIPE_API_BASE points at Stripe itself. Raises
    OSError when the port is taken. Stop it with `.stop()`."""
    from gateway.payments.config import PaymentSettings

    settings = PaymentSettings.from_env(
        {**(os.environ if environ is None else environ), "COMMERCECORE_DEMO": "1"}
    )
    if settings.api_base is None:
        return None
    parts = urlsplit(settings.api_base)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        return None
    server, _ = start_standin(
        webhook_secret=settings.webhook_secret,
        webhook_url=f"{gateway_url.rstrip('/')}/webhooks/stripe",
        host=parts.hostname,
        port=parts.port,
    )
    return server


__all__ = ["BackgroundServer", "StandinState", "create_app", "start_demo_standin", "start_standin"]
