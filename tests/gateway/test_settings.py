"""Settings from the environment: weak or missing secrets are refused outside demo mode."""

from __future__ import annotations

from pathlib import Path

import limits
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.settings import (
    DEMO_JWT_SECRET,
    RATE_ACTIONS,
    RATE_DEFAULTS,
    RATE_SETTINGS,
    Settings,
    SettingsError,
    random_secret,
)

URL = {"DATABASE_URL": "postgresql://authenticator@127.0.0.1/commercecore"}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_a_random_secret_is_accepted() -> None:
    settings = Settings.from_env({**URL, "COMMERCECORE_JWT_SECRET": random_secret()})
    assert settings.jwt_algorithm == "HS256"
    assert settings.cookie_secure is True
    assert settings.body_limit == 1024 * 1024
    assert "jwt_secret" not in repr(settings)
    assert "database_url" not in repr(settings)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "not set"),
        ("short", "at least 32"),
        ("a" * 64, "not random"),
        ("12" * 32, "not random"),
        (DEMO_JWT_SECRET, "public demo secret"),
    ],
)
def test_weak_secrets_are_refused_outside_demo(secret: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**URL, "COMMERCECORE_JWT_SECRET": secret})


def test_demo_mode_uses_the_public_secret_and_plain_cookies() -> None:
    settings = Settings.from_env({**URL, "COMMERCECORE_DEMO": "1"})
    assert settings.jwt_secret == DEMO_JWT_SECRET
    assert settings.cookie_secure is False
    # even in demo mode a short secret that was set on purpose is refused
    with pytest.raises(SettingsError):
        Settings.from_env({**URL, "COMMERCECORE_DEMO": "1", "COMMERCECORE_JWT_SECRET": "short"})


def test_database_url_is_required() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"COMMERCECORE_JWT_SECRET": random_secret()})


def test_numbers_are_checked() -> None:
    base = {**URL, "COMMERCECORE_JWT_SECRET": random_secret()}
    settings = Settings.from_env(
        {
            **base,
            "COMMERCECORE_TOKEN_TTL": "600",
            "COMMERCECORE_BODY_LIMIT": "65536",
            "COMMERCECORE_POOL_TIMEOUT": "2.5",
            "COMMERCECORE_LOGIN_FREE_ATTEMPTS": "5",
            "COMMERCECORE_LOGIN_DELAY_BASE": "2.5",
            "COMMERCECORE_LOGIN_DELAY_MAX": "60",
            "COMMERCECORE_JWT_AUDIENCE": "shop",
        }
    )
    assert settings.token_ttl == 600
    assert settings.body_limit == 65536
    assert settings.pool_timeout == 2.5
    assert (settings.login_free_attempts, settings.login_delay_base, settings.login_delay_max) == (5, 2.5, 60)
    assert settings.jwt_audience == "shop"
    for name, value in (
        ("COMMERCECORE_TOKEN_TTL", "soon"),
        ("COMMERCECORE_TOKEN_TTL", "5"),
        ("COMMERCECORE_BODY_LIMIT", "1.5"),
        ("COMMERCECORE_POOL_MAX", "0"),
        ("COMMERCECORE_POOL_TIMEOUT", "-1"),
        ("COMMERCECORE_LOGIN_FREE_ATTEMPTS", "0"),
        ("COMMERCECORE_LOGIN_DELAY_BASE", "0"),
        ("COMMERCECORE_LOGIN_DELAY_MAX", "1"),  # below the base (5 s)
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**base, name: value})


def test_rs256_and_es256_key_files(tmp_path: Path) -> None:
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    settings = Settings.from_env(
        {**URL, "COMMERCECORE_JWT_ALGORITHM": "RS256", "COMMERCECORE_JWT_PRIVATE_KEY_FILE": str(rsa_key)}
    )
    assert settings.verifying_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert settings.signing_key.startswith("-----BEGIN PRIVATE KEY-----")
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    settings = Settings.from_env(
        {**URL, "COMMERCECORE_JWT_ALGORITHM": "ES256", "COMMERCECORE_JWT_PRIVATE_KEY_FILE": str(ec_key)}
    )
    assert settings.jwt_algorithm == "ES256"


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    small = tmp_path / "small.pem"
    small.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))  # noqa: S505
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    cases = [
        ({"COMMERCECORE_JWT_ALGORITHM": "RS256"}, "PRIVATE_KEY_FILE is not set"),
        ({"COMMERCECORE_JWT_ALGORITHM": "RS256", "COMMERCECORE_JWT_PRIVATE_KEY_FILE": str(small)}, "2048"),
        ({"COMMERCECORE_JWT_ALGORITHM": "RS256", "COMMERCECORE_JWT_PRIVATE_KEY_FILE": str(ec_key)}, "RSA"),
        ({"COMMERCECORE_JWT_ALGORITHM": "ES256", "COMMERCECORE_JWT_PRIVATE_KEY_FILE": str(garbage)}, "PEM"),
        (
            {"COMMERCECORE_JWT_ALGORITHM": "RS256", "COMMERCECORE_JWT_PRIVATE_KEY_FILE": "/nonexistent"},
            "read",
        ),
        ({"COMMERCECORE_JWT_ALGORITHM": "none"}, "use one of"),
        ({"COMMERCECORE_JWT_ALGORITHM": "HS512"}, "use one of"),
    ]
    for extra, message in cases:
        with pytest.raises(SettingsError, match=message):
            Settings.from_env({**URL, **extra})


def test_the_metrics_token_is_optional_and_strong_when_set() -> None:
    base = {**URL, "COMMERCECORE_JWT_SECRET": random_secret()}
    assert Settings.from_env(base).metrics_token is None
    token = random_secret()
    settings = Settings.from_env({**base, "COMMERCECORE_METRICS_TOKEN": token})
    assert settings.metrics_token == token
    assert token not in repr(settings)
    for weak in ("metrics", "a" * 64):
        with pytest.raises(SettingsError, match="COMMERCECORE_METRICS_TOKEN"):
            Settings.from_env({**base, "COMMERCECORE_METRICS_TOKEN": weak})


def test_login_delays_and_budgets_have_defaults() -> None:
    settings = Settings.from_env({**URL, "COMMERCECORE_JWT_SECRET": random_secret()})
    assert (settings.login_free_attempts, settings.login_delay_base, settings.login_delay_max) == (3, 5, 900)
    assert set(settings.rate_limits) == {f"{a}_{s}" for a in RATE_ACTIONS for s in ("client", "account")}
    assert all(limits.parse(value).amount >= 1 for value in settings.rate_limits.values())
    assert settings.trusted_proxies == ("127.0.0.1/32", "::1/128")


def test_budgets_from_the_environment() -> None:
    base = {**URL, "COMMERCECORE_JWT_SECRET": random_secret()}
    settings = Settings.from_env(
        {
            **base,
            "COMMERCECORE_RATE_LOGIN_CLIENT": "5 per 10 minutes",
            "COMMERCECORE_RATE_REFUND_ACCOUNT": "off",
        }
    )
    assert settings.rate_limits["login_client"] == "5 per 10 minutes"
    assert settings.rate_limits["refund_account"] == "off"
    assert settings.rate_limits["login_account"] == RATE_DEFAULTS["login_account"]
    for value, message in (
        ("lots", "not a rate"),
        ("0/minute", "allows nothing"),
        ("5/fortnight", "not a rate"),
    ):
        with pytest.raises(SettingsError, match=f"COMMERCECORE_RATE_CHECKOUT_CLIENT={value!r}.*{message}"):
            Settings.from_env({**base, "COMMERCECORE_RATE_CHECKOUT_CLIENT": value})


def test_trusted_proxies_are_networks() -> None:
    base = {**URL, "COMMERCECORE_JWT_SECRET": random_secret()}
    settings = Settings.from_env(
        {**base, "COMMERCECORE_TRUSTED_PROXIES": "172.30.42.0/24, 10.1.2.3 fd00::/8"}
    )
    assert settings.trusted_proxies == ("172.30.42.0/24", "10.1.2.3/32", "fd00::/8")
    assert Settings.from_env({**base, "COMMERCECORE_TRUSTED_PROXIES": ""}).trusted_proxies == ()
    for bad in ("*", "proxy.example", "10.0.0.0/33"):
        with pytest.raises(SettingsError, match="COMMERCECORE_TRUSTED_PROXIES"):
            Settings.from_env({**base, "COMMERCECORE_TRUSTED_PROXIES": bad})


def test_the_throttle_settings_are_documented_and_the_lockout_ones_gone() -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    example = (root / ".env.example").read_text()
    compose = (root / "docker-compose.yml").read_text()
    names = [name for _key, name, _default in RATE_SETTINGS]
    names += [
        "COMMERCECORE_LOGIN_FREE_ATTEMPTS",
        "COMMERCECORE_LOGIN_DELAY_MAX",
        "COMMERCECORE_TRUSTED_PROXIES",
    ]
    for name in names:
        assert f"{name}=" in example, name
        assert f"{name}:" in compose, name
    assert "`COMMERCECORE_RATE_<ACTION>_CLIENT`, `_<ACTION>_ACCOUNT`" in readme
    assert "`COMMERCECORE_LOGIN_FREE_ATTEMPTS`, `_LOGIN_DELAY_BASE`, `_LOGIN_DELAY_MAX`" in readme
    assert "`COMMERCECORE_TRUSTED_PROXIES`" in readme
    for _key, name, default in RATE_SETTINGS:
        action = name.removeprefix("COMMERCECORE_RATE_").rsplit("_", 1)[0]
        assert f"`{action}` (" in readme, action
        assert f"{name}={default}" in example, name
    for gone in ("LOGIN_MAX_FAILURES", "LOGIN_LOCKOUT", "LOGIN_RATE", "forwarded-allow-ips"):
        assert gone not in readme + example + compose, gone


def test_the_order_limits_default_and_reach_sql_as_settings() -> None:
    demo = {**URL, "COMMERCECORE_DEMO": "1"}
    defaults = Settings.from_env(demo)
    assert dict(defaults.order_settings) == {
        "commercecore.max_open_orders": "5",
        "commercecore.max_units_per_product": "100",
        "commercecore.order_max_unpaid_age": "3600 seconds",
    }
    chosen = Settings.from_env(
        {
            **demo,
            "COMMERCECORE_MAX_OPEN_ORDERS": "3",
            "COMMERCECORE_MAX_UNITS_PER_PRODUCT": "12",
            "ORDER_MAX_UNPAID_AGE": "90s",
        }
    )
    assert dict(chosen.order_settings) == {
        "commercecore.max_open_orders": "3",
        "commercecore.max_units_per_product": "12",
        "commercecore.order_max_unpaid_age": "90 seconds",
    }


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("3600", 3600),
        ("90s", 90),
        ("60min", 3600),
        ("1 hour", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        (" 45 minutes ", 2700),
        ("1.5h", 5400),
    ],
)
def test_order_max_unpaid_age_forms(given: str, seconds: int) -> None:
    settings = Settings.from_env({**URL, "COMMERCECORE_DEMO": "1", "ORDER_MAX_UNPAID_AGE": given})
    assert settings.order_max_unpaid_age.total_seconds() == seconds


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ORDER_MAX_UNPAID_AGE", "soon", "not a duration"),
        ("ORDER_MAX_UNPAID_AGE", "1h 30", "not a duration"),
        ("ORDER_MAX_UNPAID_AGE", "-5min", "longer than zero"),
        ("ORDER_MAX_UNPAID_AGE", "0", "longer than zero"),
        ("COMMERCECORE_MAX_OPEN_ORDERS", "0", "at least 1"),
        ("COMMERCECORE_MAX_OPEN_ORDERS", "2.5", "whole number"),
        ("COMMERCECORE_MAX_UNITS_PER_PRODUCT", "0", "at least 1"),
        ("COMMERCECORE_MAX_UNITS_PER_PRODUCT", "many", "not a number"),
    ],
)
def test_bad_order_limits_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        Settings.from_env({**URL, "COMMERCECORE_DEMO": "1", name: value})
    assert name in str(info.value)
