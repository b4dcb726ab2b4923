"""`make run` (`commercecore up`): PostgreSQL, the deployed plan and a gateway answering /health; a rerun
reuses the data directory; Ctrl-C stops PostgreSQL too."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.e2e.stack import Stack, free_ports, running


def run_once(stack: Stack) -> tuple[int, int]:
    """One `commercecore up` session: (cluster system identifier, deploy events in the registry)."""
    with running(stack) as health:
        assert health.status_code == 200, health.text
        body = health.json()
        assert (body["status"], body["database"]) == ("ok", "ok")
        with psycopg.connect(stack.cluster.url()) as conn:
            ident = conn.execute("select system_identifier from pg_control_system()").fetchone()
            events = conn.execute("select count(*) from sqitch.events where event = 'deploy'").fetchone()
            deployed = conn.execute(
                "select count(*) from sqitch.changes where project = 'commercecore'"
            ).fetchone()
            products = conn.execute("select count(*) from api.products").fetchone()
    assert ident is not None
    assert events is not None
    assert deployed is not None
    assert deployed[0] > 0
    assert products is not None
    assert products[0] > 0, "the demo catalog is loaded"
    assert stack.cluster.status() is None, "Ctrl-C must stop PostgreSQL too"
    assert "customer@demo.example" in stack.output[-1], "the demo logins are printed"
    return int(ident[0]), int(events[0])


def test_up_serves_health_and_a_rerun_reuses_the_data(tmp_path: Path) -> None:
    stack = free_ports(tmp_path)
    first = run_once(stack)
    second = run_once(stack)
    # the same cluster (no second initdb), and nothing deployed twice
    assert second == first
