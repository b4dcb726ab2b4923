"""The gateway's login may not be a superuser or have BYPASSRLS: row-level security and the grants of the
request roles would not hold for it, and one injected statement would own the cluster.

Checked at startup when the database answers (the gateway still starts while it is down), and on every new
connection of the gateway's pools, which refuse a connection of such a login: a database that was down at
startup, or a login made superuser later, never serves a request.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

log = logging.getLogger("commercecore.gateway")

LOGIN = "authenticator"
LOGIN_QUERY = """
select session_user::text, r.rolsuper, r.rolbypassrls
from pg_catalog.pg_roles as r
where r.rolname = session_user
"""


class UnsafeLogin(RuntimeError):
    """The gateway's login is a superuser or has BYPASSRLS; the message names it and what to use instead."""


def refusal(role: str, superuser: bool, bypassrls: bool) -> UnsafeLogin | None:
    """The error for a login with these attributes, or None when it is fit to serve requests."""
    if not (superuser or bypassrls):
        return None
    what = "is a superuser" if superuser else "has BYPASSRLS"
    return UnsafeLogin(
        f"the gateway's login {role!r} {what}, so row-level security and grants would not hold for requests:"
        f" connect as the {LOGIN!r} login instead (DATABASE_URL or COMMERCECORE_GATEWAY_URL)"
    )


def _judge(row: tuple[Any, ...] | None) -> UnsafeLogin | None:
    if row is None:  # the login's own row is always there; without it, nothing can be said
        return UnsafeLogin(f"the gateway's login is not in pg_roles: connect as the {LOGIN!r} login")
    return refusal(str(row[0]), bool(row[1]), bool(row[2]))


async def check_async_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The `configure` hook of the gateway's pool (every path's, the Stripe paths' too): closes a
    connection of an unfit login and raises UnsafeLogin (the pool then discards it and logs the message).
    The pool runs in autocommit: the check leaves no transaction."""
    cursor = await conn.execute(LOGIN_QUERY)
    error = _judge(await cursor.fetchone())
    if error is not None:
        log.error("connection refused: %s", error)
        await conn.close()
        raise error


_SKIPPED = "login check at startup skipped (no connection: %s); each pooled connection is checked instead"


def _connect_timeout(seconds: float) -> int:
    return max(2, int(seconds))  # libpq counts whole seconds, and at least 2


def check_url(url: str, connect_timeout: float) -> None:
    """Raises UnsafeLogin when `url` logs in as an unfit role; an unreachable database passes (the gateway
    starts without it, and its pools check each connection they make later)."""
    try:
        with psycopg.connect(url, connect_timeout=_connect_timeout(connect_timeout), autocommit=True) as conn:
            row = conn.execute(LOGIN_QUERY).fetchone()
    except psycopg.Error as exc:
        log.warning(_SKIPPED, str(exc).strip() or type(exc).__name__)
        return
    error = _judge(row)
    if error is not None:
        raise error


async def check_url_async(url: str, connect_timeout: float) -> None:
    """check_url, without blocking the event loop (the gateway's startup)."""
    try:
        async with await psycopg.AsyncConnection.connect(
            url, connect_timeout=_connect_timeout(connect_timeout), autocommit=True
        ) as conn:
            cursor = await conn.execute(LOGIN_QUERY)
            row = await cursor.fetchone()
    except psycopg.Error as exc:
        log.warning(_SKIPPED, str(exc).strip() or type(exc).__name__)
        return
    error = _judge(row)
    if error is not None:
        raise error
