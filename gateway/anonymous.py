"""What a request without a session may cost: a share of the pool, a short statement timeout, one core.

Anyone can send anonymous reads, as fast as they like: without a bound, a few costly ones a second hold
every pooled connection and signed-in customers get 503. Anonymous requests wait for one of
`AnonymousLimits.connections(pool_max)` places before they ask the pool for a connection, so the rest of the
pool is always there for customers and staff; one that waits too long gets 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping

from gateway.errors import ApiError
from gateway.settings import AnonymousLimits

ANONYMOUS_ROLE = "app_readonly"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
# the least time left for the pool's own wait once the share was had
_MIN_POOL_WAIT = 0.05


def milliseconds(setting: str) -> float | None:
    """A PostgreSQL duration setting (`3s`, `300ms`, `1min`, `5000`: milliseconds) in ms; None unreadable."""
    match = _DURATION.match(setting.strip("'\""))
    if not match:
        return None
    return float(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]


def role_settings(
    settings: Mapping[str, Mapping[str, str]], limits: AnonymousLimits
) -> dict[str, dict[str, str]]:
    """The request roles' settings with the anonymous role's statement_timeout capped by the gateway's
    (the shorter one holds; the role's own 0 means none) and no parallel workers for it: an anonymous
    statement uses one core, whatever the planner would like."""
    capped = {role: dict(values) for role, values in settings.items()}
    anonymous = capped.setdefault(ANONYMOUS_ROLE, {})
    anonymous["max_parallel_workers_per_gather"] = "0"
    cap = round(limits.statement_timeout * 1000)
    if cap <= 0:
        return capped
    own = milliseconds(anonymous.get("statement_timeout", "0"))
    if own is None or own <= 0 or own > cap:
        anonymous["statement_timeout"] = f"{cap}ms"
    return capped


class AnonymousShare:
    """The places of one pool that anonymous requests may hold at once."""

    def __init__(self, limits: AnonymousLimits, pool_max: int) -> None:
        self.places = limits.connections(pool_max)
        self.wait = limits.wait
        self.in_use = 0
        self._semaphore = asyncio.Semaphore(self.places)

    @contextlib.asynccontextmanager
    async def hold(self, pool_timeout: float) -> AsyncIterator[float]:
        """One place for the block; yields how long the pool may still be waited for (the request waits
        `pool_timeout` in all). 503 when no place came free in time."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(min(self.wait, pool_timeout)):
                await self._semaphore.acquire()
        except TimeoutError:
            raise ApiError(
                503,
                "CC503",
                "No database connection is free for anonymous requests; retry shortly, or sign in.",
                details={"code": "unavailable", "reason": "anonymous_share", "limit": self.places},
                headers={"Retry-After": "1"},
            ) from None
        self.in_use += 1
        try:
            yield max(pool_timeout - (time.monotonic() - started), _MIN_POOL_WAIT)
        finally:
            self.in_use -= 1
            self._semaphore.release()
