"""The embedded cluster's log: slow statements are logged without their bind values."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.conftest import PgServer


def test_a_logged_statement_does_not_carry_its_bind_values(pg: PgServer) -> None:
    if pg.cluster is None:
        pytest.skip("the server's log is read from the embedded cluster's log file")
    secret = f"secret-{uuid.uuid4().hex}@example.com"
    marker = f"marker_{uuid.uuid4().hex}"
    with psycopg.connect(pg.url()) as conn:
        # every statement of this session counts as slow, so it is logged with whatever detail the server adds
        conn.execute("set log_min_duration_statement = 0")
        conn.execute(f"select %s::text as {marker}", [secret])
    log = pg.cluster.log_file.read_text(errors="replace")
    assert marker in log, "the statement itself is logged"
    assert secret not in log
