"""`make run` (`commercecore up`): PostgreSQL, the deployed plan and a gateway answering /health; a rerun
reuses the data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from gateway import embedded
from tests.conftest import ROOT


def wait_for_health(proc: subprocess.Popen[str], url: str, deadline_s: float = 90) -> httpx.Response:
    """Poll /health until it answers, the process dies, or the deadline passes (a readiness probe)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"commercecore up exited with {proc.returncode}:\n{output}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {deadline_s}s")


def run_up(data_dir: Path, pg_port: int, http_port: int, standin_port: int) -> tuple[int, int]:
    """Start `commercecore up`, check /health, stop it with Ctrl-C; (system identifier, deploy events)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "COMMERCECORE_GATEWAY_URL"}}
    env |= {
        "COMMERCECORE_DATA_DIR": str(data_dir),
        "COMMERCECORE_PG_PORT": str(pg_port),
        "STRIPE_API_BASE": f"http://127.0.0.1:{standin_port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", "--port", str(http_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        response = wait_for_health(proc, f"http://127.0.0.1:{http_port}/health")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["database"]) == ("ok", "ok")
        cluster = embedded.Cluster(data_dir=data_dir / "pg", port=pg_port)
        with psycopg.connect(cluster.url()) as conn:
            ident = conn.execute("select system_identifier from pg_control_system()").fetchone()
            events = conn.execute("select count(*) from sqitch.events where event = 'deploy'").fetchone()
            pending = conn.execute(
                "select count(*) from sqitch.changes where project = 'commercecore'"
            ).fetchone()
        assert ident is not None
        assert events is not None
        assert pending is not None
        assert pending[0] > 0
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert "demo" in output.lower(), output
    assert cluster.status() is None, "Ctrl-C must stop PostgreSQL too"
    return int(ident[0]), int(events[0])


def test_up_serves_health_and_a_rerun_reuses_the_data(tmp_path: Path) -> None:
    ports = embedded.free_port(), embedded.free_port(), embedded.free_port()
    first = run_up(tmp_path, *ports)
    second = run_up(tmp_path, *ports)
    # same cluster (no second initdb) and nothing deployed twice
    assert second == first
