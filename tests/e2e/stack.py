"""`commercecore up` (what `make run` runs) as a subprocess, on free ports and a temporary data directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from commercecore.local import embedded
from tests.conftest import ROOT


@dataclass
class Stack:
    data_dir: Path
    pg_port: int
    http_port: int
    standin_port: int
    output: list[str] = field(default_factory=list)
    replica_port: int = field(default_factory=embedded.free_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def cluster(self) -> embedded.Cluster:
        return embedded.Cluster(data_dir=self.data_dir / "pg", port=self.pg_port)

    @property
    def replica(self) -> embedded.Cluster:
        """The streaming replica of `up --replica`."""
        return embedded.Cluster(data_dir=self.data_dir / "replica", port=self.replica_port)


def free_ports(data_dir: Path) -> Stack:
    return Stack(data_dir, embedded.free_port(), embedded.free_port(), embedded.free_port())


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


@contextlib.contextmanager
def running(stack: Stack, *options: str) -> Iterator[httpx.Response]:
    """Run `commercecore up [options]` until the block ends, then Ctrl-C it; yields the first /health
    answer."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "COMMERCECORE_GATEWAY_URL"}}
    env |= {
        "COMMERCECORE_DATA_DIR": str(stack.data_dir),
        "COMMERCECORE_PG_PORT": str(stack.pg_port),
        "COMMERCECORE_REPLICA_PORT": str(stack.replica_port),
        "STRIPE_API_BASE": f"http://127.0.0.1:{stack.standin_port}",
        "PUBLIC_BASE_URL": stack.base_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "commercecore.cli", "up", "--port", str(stack.http_port), *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield wait_for_health(proc, f"{stack.base_url}/health")
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        stack.output.append(output)
