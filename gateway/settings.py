"""Settings: one frozen dataclass read from the environment, refusing weak secrets outside demo mode."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Self

# The fixed secret of demo mode: public on purpose, so a demo token never works outside demo mode.
DEMO_JWT_SECRET = "commercecore-demo-secret-not-for-production-use"
MIN_SECRET_BYTES = 32


class SettingsError(ValueError):
    """A setting is missing or unsafe; the message names the variable."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from the environment (SPEC §7)."""

    database_url: str
    demo: bool = False
    jwt_secret: str = field(default=DEMO_JWT_SECRET, repr=False)
    jwt_audience: str | None = None
    cookie_secure: bool = True
    public_base_url: str = "http://127.0.0.1:8000"
    pool_min: int = 2
    pool_max: int = 10

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Self:
        env = dict(os.environ if environ is None else environ)
        demo = _flag(env.get("COMMERCECORE_DEMO"))
        database_url = env.get("COMMERCECORE_GATEWAY_URL") or env.get("DATABASE_URL")
        if not database_url:
            raise SettingsError("DATABASE_URL is not set: the gateway needs the authenticator's connection URL")
        secret = env.get("COMMERCECORE_JWT_SECRET") or ""
        if not secret:
            if not demo:
                raise SettingsError("COMMERCECORE_JWT_SECRET is not set (at least 32 random bytes)")
            secret = DEMO_JWT_SECRET
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"COMMERCECORE_JWT_SECRET is {len(secret.encode())} bytes; at least {MIN_SECRET_BYTES} are required"
            )
        if secret == DEMO_JWT_SECRET and not demo:
            raise SettingsError("COMMERCECORE_JWT_SECRET is the public demo secret; set a random one")
        cookie_secure = env.get("COMMERCECORE_COOKIE_SECURE")
        return cls(
            database_url=database_url,
            demo=demo,
            jwt_secret=secret,
            jwt_audience=env.get("COMMERCECORE_JWT_AUDIENCE") or None,
            cookie_secure=_flag(cookie_secure) if cookie_secure is not None else not demo,
            public_base_url=env.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
            pool_min=int(env.get("COMMERCECORE_POOL_MIN", "2")),
            pool_max=int(env.get("COMMERCECORE_POOL_MAX", "10")),
        )


def random_secret() -> str:
    """A fresh secret suitable for COMMERCECORE_JWT_SECRET."""
    return secrets.token_urlsafe(48)
