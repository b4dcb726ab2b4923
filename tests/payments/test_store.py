"""The payments module's connection pool outlives a database restart: a pooled connection the server
closed is replaced when it is handed out, not given to a checkout or a webhook to fail on."""

from __future__ import annotations

import psycopg

from gateway.payments.store import PaymentStore
from tests.conftest import PgServer, login_url


def test_a_connection_the_server_closed_is_replaced(
    pg: PgServer, fresh_db: str, authenticator_password: str
) -> None:
    url = login_url(fresh_db, "authenticator", authenticator_password)
    with PaymentStore(url, min_size=1, max_size=1, timeout=5.0) as store:
        with store.transaction() as tx:
            first = tx.one("select pg_catalog.pg_backend_pid()")
        # what a restart or a crash does to every idle pooled connection; waits until the backend is gone
        with psycopg.connect(fresh_db, autocommit=True) as admin:
            assert admin.execute("select pg_terminate_backend(%s, 5000)", [first]).fetchone() == (True,)
        with store.transaction() as tx:
            second = tx.one("select pg_catalog.pg_backend_pid()")
            assert tx.one("select current_setting('role')") == "app_payments"
    assert second != first
