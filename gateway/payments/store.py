"""Transactions of the Stripe paths: a small synchronous pool, each transaction opened with the gateway's own
request context (`gateway.db.request_context`), so role, claims, request id, the role's timeouts and the
shop's settings are set exactly as for any request. The billing functions are executable by `app_payments`
only."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from gateway import db as gwdb

PAYMENTS_ROLE = "app_payments"


class Tx:
    """One open transaction: `one()` returns the first column of the first row (None without a row)."""

    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self.conn = conn

    def one(self, query: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(query, list(params)).fetchone()
        return None if row is None else row[0]

    def all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, list(params)).fetchall()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.conn.transaction():
            yield


def _check(conn: psycopg.Connection[Any]) -> None:
    """Refuses a pooled connection the server closed (a restart, a crash): the pool replaces it, and the
    first checkout or webhook after a restart is served instead of failing."""
    if gwdb.server_closed(conn):
        raise psycopg.OperationalError("the server closed this pooled connection")


class PaymentStore:
    """A connection pool for the Stripe paths (the authenticator's URL, or any role that may SET ROLE
    app_payments). Synchronous on purpose: the same code serves request handlers (in a thread), the
    reconciler and the CLI."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 5.0,
        application_name: str = "commercecore-payments",
        configure: Callable[[psycopg.Connection[TupleRow]], None] | None = None,
        shop_settings: Sequence[tuple[str, str]] = (),
    ) -> None:
        """`configure`: called on each new connection; raising refuses it (the gateway's login check).
        `shop_settings`: the gateway's `Settings.order_settings`, set in every transaction (checkout refuses
        an order past its maximum unpaid age); without them the database's own values apply."""
        self.timeout = timeout
        self.shop_settings = tuple(shop_settings)
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            check=_check,
            configure=configure,
            kwargs={"autocommit": True, "application_name": application_name},
        )
        self._role_settings: dict[str, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def open(self, *, wait: bool = False) -> None:
        self._pool.open(wait=wait, timeout=self.timeout)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PaymentStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settings(self, conn: psycopg.Connection[TupleRow]) -> Mapping[str, Mapping[str, str]]:
        """The per-transaction role settings (statement_timeout, ...), read once from the catalog."""
        with self._lock:
            if self._role_settings is None:
                rows = conn.execute(gwdb.ROLE_SETTINGS_QUERY).fetchall()
                self._role_settings = gwdb.parse_role_settings([(str(r[0]), str(r[1])) for r in rows])
            return self._role_settings

    @contextlib.contextmanager
    def transaction(
        self,
        role: str = PAYMENTS_ROLE,
        claims: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
        method: str = "",
        path: str = "",
        session: tuple[str, int, str] | None = None,
    ) -> Iterator[Tx]:
        """BEGIN; [the session check of (jti, user id, role), as the login role]; the request context; the
        caller's statements; COMMIT (ROLLBACK on an exception). Raises gateway.db.SessionInactive for a
        revoked or expired session or one issued with another role,
        psycopg_pool.PoolTimeout when no connection is free, psycopg.Error for database errors."""
        with self._pool.connection(timeout=self.timeout) as conn:
            settings = self._settings(conn)
            with conn.transaction():
                if session is not None:
                    row = conn.execute(gwdb.SESSION_CHECK, list(session)).fetchone()
                    if not (row and row[0] is True):
                        raise gwdb.SessionInactive()
                query, params = gwdb.request_context(
                    role,
                    claims,
                    settings,
                    request_id=request_id,
                    method=method,
                    path=path,
                    shop_settings=self.shop_settings,
                )
                conn.execute(query, params)
                yield Tx(conn)
