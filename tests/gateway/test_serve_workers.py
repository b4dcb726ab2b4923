"""`commercecore serve --workers 2` as production runs it: /metrics reports the whole gateway, whichever
worker answers the scrape (prometheus-client's multiprocess mode), not the one worker that happens to; every
worker asks for the metrics token."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from commercecore.local import embedded
from tests.gateway.conftest import GatewayDb
from tests.ops.helpers import wait_until

POOL_MIN = 2
REQUESTS = 40
METRICS_TOKEN = secrets.token_urlsafe(48)


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample of the Prometheus text format (labels as written, in order)."""
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.fixture
def served(gw_db: GatewayDb, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # what an earlier run left behind (an unreadable sample file): emptied before the workers start
    (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")
    port = embedded.free_port()
    env = {
        **os.environ,
        "DATABASE_URL": gw_db.gateway_url,
        "COMMERCECORE_JWT_SECRET": secrets.token_hex(32),
        "COMMERCECORE_POOL_MIN": str(POOL_MIN),
        "COMMERCECORE_POOL_MAX": "4",
        "COMMERCECORE_COOKIE_SECURE": "false",
        "STRIPE_SECRET_KEY": "sk_test_" + secrets.token_hex(8),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "COMMERCECORE_METRICS_TOKEN": METRICS_TOKEN,
    }
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "commercecore.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", metrics_dir
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()


def test_metrics_add_up_the_workers(served: tuple[str, Path]) -> None:
    base, metrics_dir = served

    def metrics() -> str:
        try:
            response = httpx.get(f"{base}/metrics", headers=scraper, timeout=5)
        except httpx.TransportError:
            return ""
        assert response.status_code == 200, response.text
        return response.text

    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    # both workers are up once their pools are both in the sums (each publishes at start-up)
    wait_until(
        lambda: sample(metrics(), "commercecore_db_pool_min") == 2 * POOL_MIN,
        timeout=60,
        what="two workers publishing their pools",
    )
    assert not (metrics_dir / "counter_999999.db").exists()
    for _ in range(REQUESTS):
        # a connection each: the kernel hands them to either worker
        response = httpx.get(f"{base}/products?limit=1", headers={"Connection": "close"}, timeout=10)
        assert response.status_code == 200
    labels = '{method="GET",route="/products",status="200"}'
    for _ in range(6):
        assert sample(metrics(), "commercecore_http_requests_total", labels) == REQUESTS
    for _ in range(4):  # whichever worker answers, a scrape without the token is refused
        refused = httpx.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=5)
        assert refused.status_code == 401, refused.text
        assert refused.json()["details"]["code"] == "metrics_token_required"
