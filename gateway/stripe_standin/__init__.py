"""A local stand-in for the parts of Stripe CommerceCore uses: Checkout Sessions with a hosted Pay/Decline
page, refunds, signed webhooks, Stripe's error format and Idempotency-Key semantics. For tests and demo mode;
never an imitation of Stripe's security: it runs on 127.0.0.1 with test keys only.

    python -m gateway.stripe_standin --port 12111 --webhook-url http://127.0.0.1:8000/webhooks/stripe \\
        --webhook-secret whsec_...
"""

from gateway.stripe_standin.app import create_app
from gateway.stripe_standin.server import BackgroundServer
from gateway.stripe_standin.state import StandinState


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


__all__ = ["BackgroundServer", "StandinState", "create_app", "start_standin"]
