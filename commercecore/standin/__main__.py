"""`python -m commercecore.standin --port N --webhook-url URL --webhook-secret whsec_...`"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

import uvicorn

from commercecore.standin.app import create_app
from commercecore.standin.state import StandinState


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m commercecore.standin", description="A local Stripe stand-in (test mode only)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", default=None, help="where to POST signed events")
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("STRIPE_WEBHOOK_SECRET"),
        help="whsec_... used to sign events (default: $STRIPE_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--api-key", default=None, help="the only API key accepted (default: any sk_test_...)"
    )
    parser.add_argument("--public-url", default=None, help="base URL of the hosted pay pages")
    args = parser.parse_args(argv)
    if not _loopback(args.host):
        parser.error("the stand-in serves the loopback interface only")
    if not args.webhook_secret or not str(args.webhook_secret).startswith("whsec_"):
        parser.error("--webhook-secret whsec_... (or STRIPE_WEBHOOK_SECRET) is required")
    state = StandinState(
        webhook_secret=args.webhook_secret,
        webhook_url=args.webhook_url,
        api_key=args.api_key,
        base_url=(args.public_url or f"http://{args.host}:{args.port}").rstrip("/"),
    )
    print(
        f"Stripe stand-in on http://{args.host}:{args.port} (STRIPE_API_BASE); "
        f"webhooks -> {args.webhook_url or '(none)'}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
