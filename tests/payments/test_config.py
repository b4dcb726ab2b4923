"""Payment settings come from the environment only; outside demo mode missing or public secrets refuse."""

from __future__ import annotations

import datetime

import pytest

from gateway.payments.config import DEMO_SECRET_KEY, DEMO_WEBHOOK_SECRET, PaymentSettings
from gateway.settings import SettingsError

REAL = {"STRIPE_SECRET_KEY": "sk_test_abcdefghijkl", "STRIPE_WEBHOOK_SECRET": "whsec_abcdefghijklmnop"}


def test_real_settings() -> None:
    settings = PaymentSettings.from_env({**REAL, "PUBLIC_BASE_URL": "https://shop.example/"})
    assert settings.api_base is None
    assert settings.public_base_url == "https://shop.example"
    assert settings.checkout_ttl >= datetime.timedelta(minutes=30)
    assert "sk_test" not in repr(settings)
    assert "whsec" not in repr(settings)


def test_demo_defaults_to_the_standin() -> None:
    settings = PaymentSettings.from_env({"COMMERCECORE_DEMO": "1"})
    assert (settings.secret_key, settings.webhook_secret) == (DEMO_SECRET_KEY, DEMO_WEBHOOK_SECRET)
    assert settings.api_base == "http://127.0.0.1:12111"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPE_WEBHOOK_SECRET": REAL["STRIPE_WEBHOOK_SECRET"]}, "STRIPE_SECRET_KEY is not set"),
        ({"STRIPE_SECRET_KEY": REAL["STRIPE_SECRET_KEY"]}, "STRIPE_WEBHOOK_SECRET is not set"),
        ({**REAL, "STRIPE_SECRET_KEY": "pk_test_publishable"}, "secret or restricted key"),
        ({**REAL, "STRIPE_SECRET_KEY": "sk_abcdefghijkl"}, "must say its mode"),
        ({**REAL, "STRIPE_WEBHOOK_SECRET": "secret"}, "webhook signing secret"),
        ({"STRIPE_SECRET_KEY": DEMO_SECRET_KEY, "STRIPE_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET}, "public"),
        ({**REAL, "STRIPE_API_BASE": "http://stripe.example.com"}, "loopback"),
        ({**REAL, "STRIPE_API_BASE": "https://api.example.com/v1"}, "scheme://host"),
        ({**REAL, "STRIPE_CHECKOUT_TTL": "600"}, "STRIPE_CHECKOUT_TTL"),
        ({**REAL, "STRIPE_MAX_NETWORK_RETRIES": "many"}, "STRIPE_MAX_NETWORK_RETRIES"),
    ],
)
def test_refusals(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        PaymentSettings.from_env(env)


@pytest.mark.parametrize(
    ("key", "live"),
    [("sk_live_abcdefghijkl", True), ("rk_live_abcdefghijkl", True), ("sk_test_abcdefghijkl", False)],
)
def test_the_key_says_which_webhook_events_apply(key: str, live: bool) -> None:
    assert PaymentSettings.from_env({**REAL, "STRIPE_SECRET_KEY": key}).livemode is live
