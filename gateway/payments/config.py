"""The payment settings (the configuration table of README.md), read from the environment; secrets come from
nowhere else."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

from gateway.settings import SettingsError

# demo mode talks to the local stand-in only: these values are public on purpose and refused elsewhere
DEMO_SECRET_KEY = "sk_test_commercecore_demo"  # noqa: S105
DEMO_WEBHOOK_SECRET = "whsec_commercecore_demo_not_a_secret"  # noqa: S105
DEFAULT_STANDIN_PORT = 12111
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Stripe refuses a Checkout Session that expires less than 30 minutes after its creation: one minute of margin
# for clocks that disagree
MIN_CHECKOUT_TTL = 30 * 60
MAX_CHECKOUT_TTL = 24 * 60 * 60
DEFAULT_CHECKOUT_TTL = MIN_CHECKOUT_TTL + 60
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
KEY_PREFIXES = (*LIVE_KEY_PREFIXES, "sk_test_", "rk_test_")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} must be between {low} and {high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw} must be between {low:g} and {high:g}")
    return value


def check_api_base(url: str) -> str:
    """An API base is https, or http on the loopback interface (the stand-in); no path, no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"STRIPE_API_BASE={url!r} is not an http(s) URL")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise SettingsError(f"STRIPE_API_BASE={url!r} must be scheme://host[:port] only")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise SettingsError(f"STRIPE_API_BASE={url!r}: plain http is allowed only on the loopback interface")
    return url.rstrip("/")


@dataclass(frozen=True)
class PaymentSettings:
    """What the Stripe paths need. `api_base` None means Stripe itself (https://api.stripe.com)."""

    secret_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    api_base: str | None = None
    public_base_url: str = "http://127.0.0.1:8000"
    max_network_retries: int = 2
    timeout: float = 30.0
    checkout_ttl: datetime.timedelta = datetime.timedelta(seconds=DEFAULT_CHECKOUT_TTL)
    webhook_tolerance: int = 300
    demo: bool = False

    @property
    def livemode(self) -> bool:
        """Whether the secret key is a live one: webhook events of the other mode are never applied."""
        return self.secret_key.startswith(LIVE_KEY_PREFIXES)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE, PUBLIC_BASE_URL, and the tuning knobs
        STRIPE_MAX_NETWORK_RETRIES (2), STRIPE_TIMEOUT (30 s), STRIPE_CHECKOUT_TTL (1860 s).

        Demo mode (COMMERCECORE_DEMO=1) defaults to the local stand-in with public demo secrets; outside
        it a missing or demo secret is refused with a message naming the variable.
        """
        env = dict(os.environ if environ is None else environ)
        demo = _flag(env.get("COMMERCECORE_DEMO"))
        secret_key = (env.get("STRIPE_SECRET_KEY") or "").strip()
        webhook_secret = (env.get("STRIPE_WEBHOOK_SECRET") or "").strip()
        api_base = (env.get("STRIPE_API_BASE") or "").strip() or None
        if demo:
            secret_key = secret_key or DEMO_SECRET_KEY
            webhook_secret = webhook_secret or DEMO_WEBHOOK_SECRET
            api_base = api_base or f"http://127.0.0.1:{DEFAULT_STANDIN_PORT}"
        else:
            if not secret_key:
                raise SettingsError("STRIPE_SECRET_KEY is not set (sk_live_..., sk_test_... or rk_...)")
            if not webhook_secret:
                raise SettingsError("STRIPE_WEBHOOK_SECRET is not set (whsec_..., from the webhook endpoint)")
            if secret_key == DEMO_SECRET_KEY or webhook_secret == DEMO_WEBHOOK_SECRET:
                raise SettingsError("the Stripe demo secrets are public; set real ones outside demo mode")
        if not secret_key.startswith(("sk_", "rk_")):
            raise SettingsError("STRIPE_SECRET_KEY must be a secret or restricted key (sk_... or rk_...)")
        if not secret_key.startswith(KEY_PREFIXES):
            # the mode decides which webhook events apply (PaymentSettings.livemode)
            raise SettingsError(
                "STRIPE_SECRET_KEY must say its mode: sk_live_..., sk_test_..., rk_live_... or rk_test_..."
            )
        if not webhook_secret.startswith("whsec_") or len(webhook_secret) < 16:
            raise SettingsError("STRIPE_WEBHOOK_SECRET must be a webhook signing secret (whsec_...)")
        public = (env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8000").strip().rstrip("/")
        if urlsplit(public).scheme not in ("http", "https"):
            raise SettingsError(f"PUBLIC_BASE_URL={public!r} is not an http(s) URL")
        return cls(
            secret_key=secret_key,
            webhook_secret=webhook_secret,
            api_base=check_api_base(api_base) if api_base else None,
            public_base_url=public,
            max_network_retries=_int(env, "STRIPE_MAX_NETWORK_RETRIES", 2, 0, 10),
            timeout=_float(env, "STRIPE_TIMEOUT", 30.0, 1.0, 120.0),
            checkout_ttl=datetime.timedelta(
                seconds=_int(
                    env, "STRIPE_CHECKOUT_TTL", DEFAULT_CHECKOUT_TTL, MIN_CHECKOUT_TTL, MAX_CHECKOUT_TTL
                )
            ),
            demo=demo,
        )
