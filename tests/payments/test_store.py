"""The Stripe paths' pool (made as the gateway's, gateway.db.connection_pool) outlives a database restart: a
pooled connection the server closed is replaced when it is handed out, not given to a checkout or a webhook
to fail on."""

from __future__ import annotations

import asyncio

import psycopg

from gateway.payments.store import own_store
from tests.conftest import PgServer, login_url


def test_a_connection_the_server_closed_is_replaced(
    pg: PgServer, fresh_db: str, authenticator_password: str
) -> None:
    url = login_url(fresh_db, "authenticator", authenticator_password)

    async def across_a_terminated_backend() -> tuple[int, int, str]:
        async with own_store(url, max_size=1, timeout=5.0) as store:
            async with store.transaction() as tx:
                first = int(await tx.one("select pg_catalog.pg_backend_pid()"))
            # what a restart or a crash does to every idle pooled connection; waits until the backend is gone
            async with await psycopg.AsyncConnection.connect(fresh_db, autocommit=True) as admin:
                cursor = await admin.execute("select pg_terminate_backend(%s, 5000)", [first])
                assert await cursor.fetchone() == (True,)
            async with store.transaction() as tx:
                second = int(await tx.one("select pg_catalog.pg_backend_pid()"))
                role = str(await tx.one("select current_setting('role')"))
        return first, second, role

    first, second, role = asyncio.run(across_a_terminated_backend())
    assert role == "app_payments"
    assert second != first
