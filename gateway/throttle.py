"""Throttles: who the client is, the budgets of the actions worth abusing, and the 429 of the database's
delays after failed logins.

The client is the connection's peer, or what a trusted proxy says it is (X-Forwarded-For, read by uvicorn's
ProxyHeadersMiddleware only when the peer is in COMMERCECORE_TRUSTED_PROXIES; see gateway.app). An IPv6
client counts as its /64 network: one host holds a whole /64, and a key per address would let it start
afresh 2^64 times.

Budgets: signup, login, token, password change, checkout and refund each allow so many requests per
window per client and per account (RATE_DEFAULTS in gateway.settings); one more is 429 with Retry-After
and the budget in `details`. They are counted by the `limits` library (moving windows, exact at the
window's edge) in this process's memory: with `serve --workers N` each worker counts its own clients, so
a client may spend up to N times a budget. Good enough for what budgets are for (bounding the cost one
client or one account can cause); the login delays, which protect passwords, live in the database and are
shared by every worker (auth.record_login_failure).

A budget must not become a way to lock someone out. The account budget of login and token is therefore
spent only by clients that have already failed for that account (the database says so, auth.login_delay):
a guesser spread over many addresses gets one free try per address, then meets the account's budget,
while the owner at any address without failures is never refused by it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import Scope

from gateway.errors import ApiError
from gateway.settings import Settings

BudgetScope = Literal["client", "account"]
IPV6_PREFIX = 64
# the key of a client without an IP address (a Unix socket): all such clients share it
NO_ADDRESS = "::"

_ACTION_NAMES = {
    "signup": "sign-ups",
    "login": "sign-ins",
    "token": "token requests",
    "password": "password changes",
    "checkout": "checkouts",
    "refund": "refunds",
}


def client_key(scope: Scope) -> str:
    """The client as throttles count it: an IPv4 address, the /64 network of an IPv6 address, or
    NO_ADDRESS. Always a valid PostgreSQL inet."""
    client = scope.get("client")
    if not client:
        return NO_ADDRESS
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return NO_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def email_account(email: str) -> str:
    """The account key of an email address as the database normalises it (trimmed, lower-cased); a digest,
    so the process's memory holds no address."""
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def user_account(user_id: int | str) -> str:
    return f"user:{user_id}"


class Budgets:
    """The per-client and per-account budgets of each throttled action."""

    def __init__(self, rates: Mapping[str, str]) -> None:
        self.items: dict[str, limits.RateLimitItem] = {
            key: limits.parse(value) for key, value in rates.items() if value.strip().lower() != "off"
        }
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def spend(self, action: str, scope: BudgetScope, key: str) -> None:
        """Counts one request of `action` against the budget of `key` (a client_key or an account key);
        ApiError 429 when the budget is spent (the request is then not counted)."""
        item = self.items.get(f"{action}_{scope}")
        if item is None or self.limiter.hit(item, action, scope, key):
            return
        reset_time = self.limiter.get_window_stats(item, action, scope, key).reset_time
        raise rate_limited(action, scope, item, max(1, math.ceil(reset_time - time.time())))

    def spend_both(self, action: str, client: str, account: str | None) -> None:
        """The client's budget, then (when the caller names one) the account's."""
        self.spend(action, "client", client)
        if account is not None:
            self.spend(action, "account", account)


def rate_limited(action: str, scope: BudgetScope, item: limits.RateLimitItem, retry_after: int) -> ApiError:
    whose = "from this address" if scope == "client" else "for this account"
    return ApiError(
        429,
        "CC429",
        f"Too many {_ACTION_NAMES.get(action, action)} {whose}; retry in {retry_after} s.",
        details={
            "code": "rate_limited",
            "action": action,
            "scope": scope,
            "limit": item.amount,
            "period_seconds": item.get_expiry(),
            "retry_after": retry_after,
        },
        hint=f"At most {item.amount} per {item.get_expiry()} s {whose}; wait Retry-After seconds.",
        headers={"Retry-After": str(retry_after)},
    )


def login_delayed(retry_after: int, settings: Settings) -> ApiError:
    """429 while the database's delay for this address and this client runs (auth.login_delay)."""
    return ApiError(
        429,
        "CC429",
        "Too many failed sign-in attempts for this account from this address; try again later.",
        details={
            "code": "too_many_attempts",
            "retry_after": retry_after,
            "free_attempts": settings.login_free_attempts,
            "delay_base_seconds": settings.login_delay_base,
            "delay_max_seconds": settings.login_delay_max,
        },
        headers={"Retry-After": str(retry_after)},
        hint="Wait Retry-After seconds (each further failure doubles it); other addresses are not delayed.",
    )


def seconds_until(moment: datetime) -> int:
    """Whole seconds from now until `moment`, at least 1 (a Retry-After)."""
    return max(1, math.ceil((moment - datetime.now(UTC)).total_seconds()))
