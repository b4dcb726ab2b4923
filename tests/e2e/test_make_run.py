"""`make run` (`commercecore up`): PostgreSQL, the deployed plan and a gateway answering /health; a rerun
reuses the data directory; Ctrl-C stops PostgreSQL too. `make run REPLICA=1` (`up --replica`) adds a
streaming replica that the gateway sends customers' reads to."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from click.testing import CliRunner

from commercecore.cli.main import main
from commercecore.local.seed import DEMO_USERS
from tests.e2e.stack import Stack, free_ports, running


def run_once(stack: Stack, *options: str) -> tuple[int, int]:
    """One `commercecore up` session: (cluster system identifier, deploy events in the registry)."""
    with running(stack, *options) as health:
        assert health.status_code == 200, health.text
        body = health.json()
        assert (body["status"], body["database"]) == ("ok", "ok")
        if "--replica" in options:
            read_from_the_replica(stack)
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
    assert stack.replica.status() is None, "and the replica"
    assert "customer@demo.example" in stack.output[-1], "the demo logins are printed"
    return int(ident[0]), int(events[0])


DEMO_CUSTOMER = next((email, password) for email, password, _, role in DEMO_USERS if role == "app_readwrite")


def read_from_the_replica(stack: Stack) -> None:
    """The replica runs, and a customer's read is served by it (the gateway's routing counts, as
    `commercecore dba health --gateway` shows them beside the standbys). Anonymous catalog reads fill the
    catalog cache, on the primary; a customer's session reaches the replica once it has replayed it."""
    assert stack.replica.status() is not None
    token = httpx.post(
        f"{stack.base_url}/auth/token",
        json={"email": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]},
        timeout=10,
    )
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    replica = (f"127.0.0.1:{stack.replica_port}/commercecore", "read")
    deadline = time.monotonic() + 30
    while replica not in (health := gateway_health(stack))[0]:
        assert time.monotonic() < deadline, health[0]
        assert httpx.get(f"{stack.base_url}/orders", headers=bearer, timeout=10).status_code == 200
    assert [row["state"] for row in health[1]["replicas"]] == ["streaming"]


def gateway_health(stack: Stack) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """The (target, reason) pairs the gateway has routed requests by, and the whole report."""
    result = CliRunner().invoke(
        main, ["dba", "health", "--json", "--gateway", stack.base_url, "--database-url", stack.cluster.url()]
    )
    assert result.exit_code in (0, 1), result.output
    health: dict[str, Any] = json.loads(result.stdout)
    return {(row["target"], row["reason"]) for row in health["routing"] if "requests" in row}, health


def test_up_serves_health_and_a_rerun_reuses_the_data(tmp_path: Path) -> None:
    stack = free_ports(tmp_path)
    first = run_once(stack)
    second = run_once(stack, "--replica")
    # the same cluster (no second initdb), and nothing deployed twice
    assert second == first
    assert f"Replica: 127.0.0.1:{stack.replica_port}" in stack.output[-1]
