"""Transactions of the Stripe paths, on the gateway's own pool and opened as every request's: role, claims,
request id, the role's timeouts and the shop's settings (`gateway.db.request_context`), after the caller's
session check (`gateway.db.begin`). Unlike a request, a payment transaction runs its statements one by one:
between them the code decides what to call next. The billing functions are executable by `app_payments`
only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

from gateway import db

PAYMENTS_ROLE = "app_payments"

RoleSettings = Mapping[str, Mapping[str, str]]


class Tx:
    """One open transaction: `one()` returns the first column of the first row (None without a row)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def one(self, query: str, params: Sequence[Any] = ()) -> Any:
        cursor = await self.conn.execute(query, list(params))
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = await self.conn.execute(query, list(params))
        return await cursor.fetchall()

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        # inside the open transaction psycopg makes this a savepoint
        async with self.conn.transaction():
            yield


class PaymentStore:
    """The Stripe paths' way into the database: transactions on `pool` (the gateway's, or one of its own
    made by gateway.db.connection_pool for the CLI).

    `role_settings`: where the roles' per-transaction settings come from (the gateway's schema cache);
    without it they are read from the catalog once. `shop_settings`: the gateway's
    `Settings.order_settings`, set in every transaction (checkout refuses an order past its maximum unpaid
    age); without them the database's own values apply.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        timeout: float = 5.0,
        shop_settings: Sequence[tuple[str, str]] = (),
        role_settings: Callable[[], Awaitable[RoleSettings]] | None = None,
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.shop_settings = tuple(shop_settings)
        self._role_settings = role_settings
        self._read: RoleSettings | None = None

    async def _settings(self, conn: psycopg.AsyncConnection[Any]) -> RoleSettings:
        if self._role_settings is not None:
            return await self._role_settings()
        if self._read is None:
            self._read = await db.read_role_settings(conn)
        return self._read

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        role: str = PAYMENTS_ROLE,
        claims: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
        method: str = "",
        path: str = "",
        session: db.Identity | None = None,
    ) -> AsyncIterator[Tx]:
        """BEGIN; [the session check of a signed-in `session`, as the login role]; the request context of
        `role` and `claims`; the caller's statements; COMMIT (ROLLBACK on an exception). Raises
        gateway.db.SessionInactive for a revoked or expired session or one issued with another role,
        psycopg_pool.PoolTimeout when no connection is free, psycopg.Error for database errors."""
        async with self.pool.connection(timeout=self.timeout) as conn:
            context = db.request_context(
                role,
                claims,
                await self._settings(conn),
                request_id=request_id,
                method=method,
                path=path,
                shop_settings=self.shop_settings,
            )
            await db.begin(conn, session, context)
            try:
                yield Tx(conn)
            except BaseException:
                if not conn.closed and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                    await conn.execute("rollback")
                raise
            await conn.execute("commit")


@contextlib.asynccontextmanager
async def own_store(
    conninfo: str,
    *,
    max_size: int = 2,
    timeout: float = 5.0,  # noqa: ASYNC109 - the pool's wait for a connection, not a deadline for the call
    application_name: str = "commercecore-payments",
    shop_settings: Sequence[tuple[str, str]] = (),
) -> AsyncIterator[PaymentStore]:
    """A store on a pool of its own, for what runs outside the gateway (the CLI, the jobs runner, tests):
    made as the gateway's (gateway.db.connection_pool), opened without waiting for the database (the first
    transaction waits up to `timeout`), closed on exit."""
    pool = db.connection_pool(
        conninfo, min_size=1, max_size=max_size, timeout=timeout, application_name=application_name
    )
    await pool.open(wait=False)
    try:
        yield PaymentStore(pool, timeout=timeout, shop_settings=shop_settings)
    finally:
        await pool.close()
