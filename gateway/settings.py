"""Settings: one frozen dataclass read from the environment, refusing weak secrets outside demo mode."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import limits
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from gateway.durations import parse_duration

# The fixed secret of demo mode: public on purpose, so a demo token never works outside demo mode.
DEMO_JWT_SECRET = "commercecore-demo-secret-not-for-production-use"  # noqa: S105
MIN_SECRET_BYTES = 32
# a 32-byte secret made of few distinct characters ("aaaa...", "12341234...") is a password, not a key
MIN_SECRET_DISTINCT_CHARS = 10
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
PASSWORD_MIN_LENGTH = 10
# argon2 hashes whatever it is given: a megabyte "password" is a denial of service, not a password
PASSWORD_MAX_LENGTH = 1024
DEFAULT_MAX_UNPAID_AGE = datetime.timedelta(minutes=60)


# The actions with their own budgets, each per client address and per account (the email address for
# signup, login and token; the signed-in user for the others), in the notation of the `limits` library
# ("30/minute", "10/hour", "5/10 minutes") or "off": budget key, variable, default.
RATE_ACTIONS = ("signup", "login", "token", "password", "checkout", "refund")
RATE_SETTINGS = (
    # a shared address (an office, a carrier's NAT) signs up a few people an hour; one email, once
    ("signup_client", "COMMERCECORE_RATE_SIGNUP_CLIENT", "20/hour"),
    ("signup_account", "COMMERCECORE_RATE_SIGNUP_ACCOUNT", "5/hour"),
    # the account budget of login and token counts only clients that already failed for that account (see
    # gateway.throttle): it never stops the owner at a clean address
    ("login_client", "COMMERCECORE_RATE_LOGIN_CLIENT", "30/minute"),
    ("login_account", "COMMERCECORE_RATE_LOGIN_ACCOUNT", "10/minute"),
    ("token_client", "COMMERCECORE_RATE_TOKEN_CLIENT", "30/minute"),
    ("token_account", "COMMERCECORE_RATE_TOKEN_ACCOUNT", "10/minute"),
    ("password_client", "COMMERCECORE_RATE_PASSWORD_CLIENT", "10/minute"),
    ("password_account", "COMMERCECORE_RATE_PASSWORD_ACCOUNT", "5/minute"),
    # each checkout opens a Stripe session: a few a minute is plenty for a person
    ("checkout_client", "COMMERCECORE_RATE_CHECKOUT_CLIENT", "30/minute"),
    ("checkout_account", "COMMERCECORE_RATE_CHECKOUT_ACCOUNT", "10/minute"),
    ("refund_client", "COMMERCECORE_RATE_REFUND_CLIENT", "60/minute"),
    ("refund_account", "COMMERCECORE_RATE_REFUND_ACCOUNT", "30/minute"),
)
RATE_DEFAULTS: Mapping[str, str] = MappingProxyType({key: default for key, _name, default in RATE_SETTINGS})
RATES_OFF: Mapping[str, str] = MappingProxyType(dict.fromkeys(RATE_DEFAULTS, "off"))
# clients whose X-Forwarded-For is believed by default: a proxy on the gateway's own host
DEFAULT_TRUSTED_PROXIES = ("127.0.0.1/32", "::1/128")
_LIST_SEPARATORS = re.compile(r"[\s,]+")
_URL_SCHEME = re.compile(r"postgres(?:ql)?://", re.IGNORECASE)
_URL_SEPARATOR = re.compile(r"\s*,\s*(?=postgres(?:ql)?://)", re.IGNORECASE)


class SettingsError(ValueError):
    """A setting is missing or unsafe; the message names the variable."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    value = _number(env, name, default, minimum=minimum)
    if value != int(value):
        raise SettingsError(f"{name}={env.get(name)!r} is not a whole number")
    return int(value)


def _duration(env: Mapping[str, str], name: str, default: datetime.timedelta) -> datetime.timedelta:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={exc}") from None
    if value <= datetime.timedelta(0):
        raise SettingsError(f"{name}={raw!r} must be longer than zero")
    return value


def max_unpaid_age_from_env(env: Mapping[str, str]) -> datetime.timedelta:
    """ORDER_MAX_UNPAID_AGE, else 60 minutes: the gateway's checkout and the expiry job read it alike."""
    return _duration(env, "ORDER_MAX_UNPAID_AGE", DEFAULT_MAX_UNPAID_AGE)


def _rate_limits(env: Mapping[str, str]) -> Mapping[str, str]:
    """COMMERCECORE_RATE_<ACTION>_<CLIENT|ACCOUNT>, each checked by the parser that will read it."""
    rates = dict(RATE_DEFAULTS)
    for key, name, _default in RATE_SETTINGS:
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        if raw.lower() != "off":
            try:
                item = limits.parse(raw)
            except ValueError:
                raise SettingsError(
                    f"{name}={raw!r} is not a rate: write e.g. 30/minute, 10/hour, 5/10 minutes, or off"
                ) from None
            if item.amount < 1:
                raise SettingsError(f"{name}={raw!r} allows nothing; use off to turn the budget off")
        rates[key] = raw
    return MappingProxyType(rates)


def _login_delays(env: Mapping[str, str]) -> dict[str, Any]:
    """COMMERCECORE_LOGIN_FREE_ATTEMPTS, _DELAY_BASE and _DELAY_MAX, as Settings fields."""
    delay_base = _number(env, "COMMERCECORE_LOGIN_DELAY_BASE", 5.0, minimum=0.001)
    delay_max = _number(env, "COMMERCECORE_LOGIN_DELAY_MAX", 900.0, minimum=0.001)
    if delay_max < delay_base:
        raise SettingsError(
            f"COMMERCECORE_LOGIN_DELAY_MAX={delay_max:g} is below"
            f" COMMERCECORE_LOGIN_DELAY_BASE={delay_base:g}"
        )
    return {
        "login_free_attempts": _integer(env, "COMMERCECORE_LOGIN_FREE_ATTEMPTS", 3, minimum=1),
        "login_delay_base": delay_base,
        "login_delay_max": delay_max,
    }


def _trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    """COMMERCECORE_TRUSTED_PROXIES: addresses or CIDR networks, separated by commas or spaces."""
    raw = env.get("COMMERCECORE_TRUSTED_PROXIES")
    if raw is None:
        return DEFAULT_TRUSTED_PROXIES
    networks = []
    for item in _LIST_SEPARATORS.split(raw.strip()):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError(
                f"COMMERCECORE_TRUSTED_PROXIES: {item!r} is not an IP address or network (CIDR)"
            ) from None
    return tuple(networks)


def _check_secret(secret: str) -> None:
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise SettingsError(
            f"COMMERCECORE_JWT_SECRET is {size} bytes; at least {MIN_SECRET_BYTES} random bytes are required"
            " (make one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARS:
        raise SettingsError("COMMERCECORE_JWT_SECRET is not random (too few distinct characters)")


def _metrics_token(env: Mapping[str, str]) -> str | None:
    """COMMERCECORE_METRICS_TOKEN: unset, /metrics answers loopback clients only; set, it is a bearer token
    that has to be as hard to guess as the JWT secret."""
    token = (env.get("COMMERCECORE_METRICS_TOKEN") or "").strip()
    if not token:
        return None
    if len(token.encode()) < MIN_SECRET_BYTES or len(set(token)) < MIN_SECRET_DISTINCT_CHARS:
        raise SettingsError(
            f"COMMERCECORE_METRICS_TOKEN must be at least {MIN_SECRET_BYTES} random bytes"
            " (make one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return token


def _read_key(env: Mapping[str, str], name: str) -> str:
    path = env.get(name)
    if not path:
        raise SettingsError(f"{name} is not set: the JWT algorithm needs a PEM key file")
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{name}={path!r} cannot be read: {exc.strerror}") from None


def check_key_pair(algorithm: str, private_pem: str, public_pem: str | None) -> str:
    """Validates an RS256/ES256 key (RSA >= 2048 bits, EC P-256); returns the public key PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            f"COMMERCECORE_JWT_PRIVATE_KEY_FILE is not an unencrypted PEM private key: {exc}"
        ) from None
    if algorithm == "RS256":
        if not isinstance(private, rsa.RSAPrivateKey):
            raise SettingsError("COMMERCECORE_JWT_ALGORITHM=RS256 needs an RSA private key")
        if private.key_size < 2048:
            raise SettingsError(f"the RSA key has {private.key_size} bits; at least 2048 are required")
    elif not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise SettingsError("COMMERCECORE_JWT_ALGORITHM=ES256 needs an EC P-256 (secp256r1) private key")
    derived = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    if public_pem is not None:
        given = serialization.load_pem_public_key(public_pem.encode())
        as_pem = given.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        if as_pem != derived:
            raise SettingsError("COMMERCECORE_JWT_PUBLIC_KEY_FILE does not belong to the private key")
    return derived


def _order_limits(env: Mapping[str, str]) -> dict[str, Any]:
    """The limits on a customer's unpaid orders, as keyword arguments of Settings."""
    return {
        "max_open_orders": _integer(env, "COMMERCECORE_MAX_OPEN_ORDERS", 5, minimum=1),
        "max_units_per_product": _integer(env, "COMMERCECORE_MAX_UNITS_PER_PRODUCT", 100, minimum=1),
        "order_max_unpaid_age": max_unpaid_age_from_env(env),
    }


@dataclass(frozen=True)
class RequestLimits:
    """How large a request may be: past these it is refused (414, 431 or 400 with the limit in details)
    before it costs the database anything."""

    # the query string, and the path, in bytes (414 beyond); checked before anything is parsed
    max_query_bytes: int = 8192
    # header lines and their total size (names and values) of one request (431 beyond)
    max_headers: int = 100
    max_header_bytes: int = 32768
    # the read dialect: select= items, filters (those inside or=/and= included), values of one in.(...)
    # and nesting levels of or=/and=
    max_select_columns: int = 100
    max_filters: int = 50
    max_in_values: int = 1000
    max_logic_depth: int = 8
    # the gateway's statement caches (reads by URL, SQL texts), in bytes all told, and the largest SQL
    # text or query string one entry may have: a one-off large statement is built afresh, never kept
    statement_cache_bytes: int = 4 * 1024 * 1024
    statement_cache_max_entry: int = 4096

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        return cls(
            max_query_bytes=_integer(env, "COMMERCECORE_MAX_QUERY_BYTES", 8192, minimum=256),
            max_headers=_integer(env, "COMMERCECORE_MAX_HEADERS", 100, minimum=8),
            max_header_bytes=_integer(env, "COMMERCECORE_MAX_HEADER_BYTES", 32768, minimum=1024),
            max_select_columns=_integer(env, "COMMERCECORE_MAX_SELECT_COLUMNS", 100, minimum=1),
            max_filters=_integer(env, "COMMERCECORE_MAX_FILTERS", 50, minimum=1),
            max_in_values=_integer(env, "COMMERCECORE_MAX_IN_VALUES", 1000, minimum=1),
            max_logic_depth=_integer(env, "COMMERCECORE_MAX_LOGIC_DEPTH", 8, minimum=1),
            statement_cache_bytes=_integer(env, "COMMERCECORE_STATEMENT_CACHE_BYTES", 4 * 1024 * 1024),
            statement_cache_max_entry=_integer(env, "COMMERCECORE_STATEMENT_CACHE_MAX_ENTRY", 4096),
        )


@dataclass(frozen=True)
class AnonymousLimits:
    """What a request without a session (role app_readonly) may hold: signed-in customers and staff keep
    their connections whatever anonymous traffic does."""

    # seconds; the shorter of this and app_readonly's own statement_timeout applies (0: the role's alone)
    statement_timeout: float = 1.0
    # the share of the request pool anonymous requests may hold at once (at least one connection)
    pool_share: float = 0.5
    # seconds an anonymous request waits for its share before 503 with Retry-After
    wait: float = 1.0
    # `Prefer: count=exact` counts at most this many rows, then gives the planner's estimate (as
    # count=estimated does)
    count_limit: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        share = _number(env, "COMMERCECORE_ANONYMOUS_POOL_SHARE", 0.5)
        if share > 1:
            raise SettingsError(f"COMMERCECORE_ANONYMOUS_POOL_SHARE={share:g} is a share: 0 to 1")
        return cls(
            statement_timeout=_number(env, "COMMERCECORE_ANONYMOUS_STATEMENT_TIMEOUT", 1.0),
            pool_share=share,
            wait=_number(env, "COMMERCECORE_ANONYMOUS_WAIT", 1.0),
            count_limit=_integer(env, "COMMERCECORE_ANONYMOUS_COUNT_LIMIT", 1000),
        )

    def connections(self, pool_max: int) -> int:
        """How many of a pool's `pool_max` connections anonymous requests may hold at once."""
        return max(1, int(pool_max * self.pool_share))


@dataclass(frozen=True)
class ReplicaSettings:
    """Streaming read replicas (gateway.replicas): where GET requests of visitors and customers may go, and
    when they may not."""

    # the authenticator's URL on each replica (DATABASE_REPLICA_URLS, comma-separated); none: no routing
    urls: tuple[str, ...] = field(default=(), repr=False)
    # seconds a read carrying the commit position of a write waits for a replica to reach it (then primary)
    wait: float = 0.1
    # seconds behind the primary beyond which a replica is skipped until it catches up
    max_lag: float = 5.0
    # seconds between two checks of each replica by a worker's monitor
    check_interval: float = 1.0
    # connections of each replica's pool (default: COMMERCECORE_POOL_MAX)
    pool_max: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, pool_max: int = 10) -> Self:
        env = os.environ if environ is None else environ
        return cls(
            urls=_replica_urls(env),
            wait=_seconds(env, "COMMERCECORE_REPLICA_WAIT", 0.1),
            max_lag=_seconds(env, "COMMERCECORE_REPLICA_MAX_LAG", 5.0, positive=True),
            check_interval=_seconds(env, "COMMERCECORE_REPLICA_CHECK_INTERVAL", 1.0, positive=True),
            pool_max=_integer(env, "COMMERCECORE_REPLICA_POOL_MAX", pool_max, minimum=1),
        )


def _seconds(env: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    """A duration in seconds (`0.1`, `100ms`, `5s`), at least zero (more than zero when `positive`)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_duration(raw).total_seconds()
    except ValueError as exc:
        raise SettingsError(f"{name}={exc}") from None
    if value < 0 or (positive and value == 0):
        raise SettingsError(f"{name}={raw!r} must be {'longer than' if positive else 'at least'} zero")
    return value


def _replica_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """DATABASE_REPLICA_URLS: postgresql:// URLs separated by commas (a comma inside one, as in a
    multi-host URL, stays in it); a malformed one is named by its position, never by its text (it holds a
    password)."""
    raw = (env.get("DATABASE_REPLICA_URLS") or "").strip()
    urls = tuple(item.strip() for item in _URL_SEPARATOR.split(raw) if item.strip())
    for position, url in enumerate(urls, 1):
        try:
            if not _URL_SCHEME.match(url):
                raise ProgrammingError("not a URL")
            conninfo_to_dict(url)
        except ProgrammingError:
            raise SettingsError(
                f"DATABASE_REPLICA_URLS: entry {position} is not a postgresql:// URL"
            ) from None
    return urls


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from the environment (the configuration table of README.md)."""

    database_url: str = field(repr=False)
    demo: bool = False
    jwt_algorithm: str = "HS256"
    jwt_secret: str = field(default=DEMO_JWT_SECRET, repr=False)
    # RS256/ES256: the PEM private key signs, the public key verifies (derived from the private one)
    jwt_private_key: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_audience: str | None = None
    jwt_leeway: int = 30
    token_ttl: int = 3600
    cookie_secure: bool = True
    public_base_url: str = "http://127.0.0.1:8000"
    pool_min: int = 2
    pool_max: int = 10
    pool_timeout: float = 5.0
    body_limit: int = 1024 * 1024
    # the largest page a collection returns (limit and Range are capped to it); 0: no cap
    max_rows: int = 1000
    # requests run as named prepared statements of their connection (planned once per connection); off for
    # a proxy that cannot keep them (PgBouncer in transaction mode before 1.21 / max_prepared_statements = 0)
    prepared_statements: bool = True
    # one JSON line per request on stderr (commercecore.access); off when a proxy in front logs requests
    access_log: bool = True
    # failed logins of one (email address, client) pair: the free ones, then a delay before the pair's next
    # attempt of base seconds, doubling with each further failure up to max (auth.record_login_failure)
    login_free_attempts: int = 3
    login_delay_base: float = 5.0
    login_delay_max: float = 900.0
    # budgets per action, client and account ("30/minute" or "off"; see RATE_DEFAULTS, gateway.throttle)
    rate_limits: Mapping[str, str] = field(default_factory=lambda: RATE_DEFAULTS, hash=False)
    # peers whose X-Forwarded-For (and -Proto) name the client: networks as strings ("10.0.0.0/8")
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    # argon2id cost (RFC 9106 second recommendation: t=3, 64 MiB, p=4)
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # the bearer token /metrics requires; None: /metrics answers loopback clients only
    metrics_token: str | None = field(default=None, repr=False)
    # limits on a customer's unpaid orders, enforced in SQL (see `order_settings`)
    max_open_orders: int = 5
    max_units_per_product: int = 100
    order_max_unpaid_age: datetime.timedelta = DEFAULT_MAX_UNPAID_AGE
    limits: RequestLimits = field(default_factory=RequestLimits)
    anonymous: AnonymousLimits = field(default_factory=AnonymousLimits)
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)

    @property
    def signing_key(self) -> str:
        return self.jwt_secret if self.jwt_algorithm == "HS256" else self.jwt_private_key or ""

    @property
    def verifying_key(self) -> str:
        return self.jwt_secret if self.jwt_algorithm == "HS256" else self.jwt_public_key or ""

    @property
    def order_settings(self) -> tuple[tuple[str, str], ...]:
        """The shop's order limits as the settings (GUCs) every request transaction sets: the functions
        of the database read them there, so the rules stay in SQL and the values in the environment."""
        return (
            ("commercecore.max_open_orders", str(self.max_open_orders)),
            ("commercecore.max_units_per_product", str(self.max_units_per_product)),
            ("commercecore.order_max_unpaid_age", f"{self.order_max_unpaid_age.total_seconds():g} seconds"),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Every setting from the environment (the process's by default); SettingsError names the first
        variable that is missing or unsafe, in the order of the groups below."""
        env = dict(os.environ if environ is None else environ)
        demo = _flag(env.get("COMMERCECORE_DEMO"))
        return cls(
            database_url=_database_url(env),
            demo=demo,
            **_signing_keys(env, demo),
            **_pool_sizes(env),
            **_sessions(env, demo),
            pool_timeout=_number(env, "COMMERCECORE_POOL_TIMEOUT", 5.0, minimum=0.1),
            body_limit=_integer(env, "COMMERCECORE_BODY_LIMIT", 1024 * 1024, minimum=1024),
            max_rows=_integer(env, "COMMERCECORE_MAX_ROWS", 1000),
            prepared_statements=_flag(env.get("COMMERCECORE_PREPARED_STATEMENTS", "on")),
            access_log=_flag(env.get("COMMERCECORE_ACCESS_LOG", "on")),
            **_login_delays(env),
            rate_limits=_rate_limits(env),
            trusted_proxies=_trusted_proxies(env),
            metrics_token=_metrics_token(env),
            **_order_limits(env),
            limits=RequestLimits.from_env(env),
            anonymous=AnonymousLimits.from_env(env),
            replicas=ReplicaSettings.from_env(env, pool_max=_pool_sizes(env)["pool_max"]),
        )


def _database_url(env: Mapping[str, str]) -> str:
    """COMMERCECORE_GATEWAY_URL, else DATABASE_URL: the authenticator's connection URL."""
    database_url = env.get("COMMERCECORE_GATEWAY_URL") or env.get("DATABASE_URL")
    if not database_url:
        raise SettingsError("DATABASE_URL is not set: the gateway needs the authenticator's connection URL")
    return database_url


def _hs256_secret(env: Mapping[str, str], demo: bool) -> str:
    """COMMERCECORE_JWT_SECRET: random and long enough; the public demo secret only in demo mode (and
    there by default)."""
    secret = env.get("COMMERCECORE_JWT_SECRET") or ""
    if not secret:
        if not demo:
            raise SettingsError("COMMERCECORE_JWT_SECRET is not set (at least 32 random bytes)")
        secret = DEMO_JWT_SECRET
    elif secret != DEMO_JWT_SECRET:
        _check_secret(secret)
    if secret == DEMO_JWT_SECRET and not demo:
        raise SettingsError("COMMERCECORE_JWT_SECRET is the public demo secret; set a random one")
    return secret


def _signing_keys(env: Mapping[str, str], demo: bool) -> dict[str, Any]:
    """COMMERCECORE_JWT_ALGORITHM and its key: the secret (HS256) or the PEM key pair (RS256, ES256), as
    Settings fields."""
    algorithm = (env.get("COMMERCECORE_JWT_ALGORITHM") or "HS256").strip().upper()
    if algorithm not in JWT_ALGORITHMS:
        raise SettingsError(
            f"COMMERCECORE_JWT_ALGORITHM={algorithm!r}: use one of {', '.join(JWT_ALGORITHMS)}"
        )
    if algorithm == "HS256":
        return {"jwt_algorithm": algorithm, "jwt_secret": _hs256_secret(env, demo)}
    private_key = _read_key(env, "COMMERCECORE_JWT_PRIVATE_KEY_FILE")
    given_public = (
        _read_key(env, "COMMERCECORE_JWT_PUBLIC_KEY_FILE")
        if env.get("COMMERCECORE_JWT_PUBLIC_KEY_FILE")
        else None
    )
    return {
        "jwt_algorithm": algorithm,
        "jwt_secret": "",
        "jwt_private_key": private_key,
        "jwt_public_key": check_key_pair(algorithm, private_key, given_public),
    }


def _pool_sizes(env: Mapping[str, str]) -> dict[str, Any]:
    """COMMERCECORE_POOL_MIN and _MAX, as Settings fields."""
    pool_min = _integer(env, "COMMERCECORE_POOL_MIN", 2)
    pool_max = _integer(env, "COMMERCECORE_POOL_MAX", 10, minimum=1)
    if pool_max < pool_min:
        raise SettingsError(f"COMMERCECORE_POOL_MAX={pool_max} is below COMMERCECORE_POOL_MIN={pool_min}")
    return {"pool_min": pool_min, "pool_max": pool_max}


def _sessions(env: Mapping[str, str], demo: bool) -> dict[str, Any]:
    """The tokens' audience and lifetime, the cookies' Secure flag (off by default in demo mode only) and
    the public base URL, as Settings fields."""
    cookie_secure = env.get("COMMERCECORE_COOKIE_SECURE")
    return {
        "jwt_audience": env.get("COMMERCECORE_JWT_AUDIENCE") or None,
        "token_ttl": _integer(env, "COMMERCECORE_TOKEN_TTL", 3600, minimum=60),
        "cookie_secure": _flag(cookie_secure) if cookie_secure is not None else not demo,
        "public_base_url": env.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
    }


def random_secret() -> str:
    """A fresh secret suitable for COMMERCECORE_JWT_SECRET."""
    return secrets.token_urlsafe(48)
