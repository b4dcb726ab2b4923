"""The test harness: one throwaway PostgreSQL per run, the plan deployed once into a template database.

Where the server comes from, in order: TEST_DATABASE_URL (a superuser URL of any PostgreSQL 17+);
testcontainers `postgres:17` when COMMERCECORE_TEST_DB=docker and a Docker engine answers; otherwise an
embedded cluster in a temporary directory, started for this run and stopped after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import requests
import stripe
from psycopg import sql

from commercecore.deploy.engine import Deployer
from commercecore.local import embedded
from commercecore.local.replica import Replica
from gateway import db as gwdb

ROOT = Path(__file__).resolve().parent.parent


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create and drop databases on, as a superuser."""

    base_url: str
    bin_dir: Path
    cluster: embedded.Cluster | None = None
    created: list[str] = field(default_factory=list)

    def url(self, dbname: str = "postgres") -> str:
        return _with_dbname(self.base_url, dbname)

    def bin(self, name: str) -> Path:
        """A PostgreSQL 18 client program (psql, pg_dump, pgbench, ...)."""
        return self.bin_dir / name

    def create_db(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            query = sql.SQL("create database {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("{} template {}").format(query, sql.Identifier(template))
            conn.execute(query)
            if template:
                copy_database_privileges(conn, template, name)
        self.created.append(name)
        return self.url(name)

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)


def copy_database_privileges(conn: psycopg.Connection[Any], source: str, target: str) -> None:
    """CREATE DATABASE ... TEMPLATE copies the contents, not the database's own ACL: copy it too."""
    rows = conn.execute(
        """
        select coalesce(r.rolname, 'public'), a.privilege_type
        from pg_database as d
        cross join lateral aclexplode(d.datacl) as a
        left join pg_roles as r on r.oid = a.grantee
        where d.datname = %s and a.grantee <> d.datdba
        """,
        [source],
    ).fetchall()
    if not rows:
        return
    db = sql.Identifier(target)
    conn.execute(sql.SQL("revoke all on database {} from public").format(db))
    for grantee, privilege in rows:
        who = sql.SQL("public") if grantee == "public" else sql.Identifier(grantee)
        conn.execute(sql.SQL("grant {} on database {} to {}").format(sql.SQL(privilege), db, who))


def _docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        embedded.check_server_version(external)
        server = PgServer(base_url=external, bin_dir=embedded.bin_dir())
        yield server
        for name in list(server.created):
            server.drop_db(name)
        return
    if os.environ.get("COMMERCECORE_TEST_DB") == "docker":
        if not _docker_engine_available():
            pytest.exit("COMMERCECORE_TEST_DB=docker but no Docker engine answers", returncode=3)
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:17", driver=None).with_command(
            "postgres -c shared_preload_libraries=pg_stat_statements -c compute_query_id=on -c fsync=off"
        )
        with container:
            yield PgServer(base_url=container.get_connection_url(), bin_dir=embedded.bin_dir())
        return
    cluster = embedded.Cluster(data_dir=tmp_path_factory.mktemp("pg") / "data", port=embedded.free_port())
    # durability is not under test here: the crash drills that need it start their own cluster
    cluster.init(
        extra={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "archive_mode": "off"}
    )
    cluster.start()
    try:
        yield PgServer(base_url=cluster.url("postgres"), bin_dir=embedded.bin_dir(), cluster=cluster)
    finally:
        cluster.stop(mode="immediate")


@pytest.fixture(scope="module")
def replica(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """A streaming replica of the session's cluster, made by commercecore.local.replica as `commercecore pg
    replica start` makes one (pg_basebackup -R, a slot), on a free port; for a module's tests, then stopped,
    its slot dropped and its data deleted. Only of the embedded cluster: skipped on TEST_DATABASE_URL and
    Docker servers."""
    if pg.cluster is None:
        pytest.skip("a replica is made of the embedded test cluster (not TEST_DATABASE_URL or Docker)")
    data_dir = tmp_path_factory.mktemp("replica") / "data"
    made = Replica(
        pg.cluster,
        embedded.Cluster(data_dir=data_dir, port=embedded.free_port()),
        slot=f"test_replica_{uuid.uuid4().hex[:8]}",
    )
    # a small copy: the primary's shared_buffers would double the suite's memory
    made.start(extra={"shared_buffers": "32MB"})
    try:
        yield made
    finally:
        made.stop(remove=True)


def replayed(replica: Replica, lsn: str, deadline: float = 60.0) -> None:
    """Waits until the replica has replayed the primary's WAL up to `lsn` (polled, with a deadline)."""
    until = time.monotonic() + deadline
    with psycopg.connect(replica.cluster.url("postgres"), autocommit=True) as conn:
        while True:
            row = conn.execute(
                "select coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", [lsn]
            ).fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() > until:
                pytest.fail(f"the replica did not replay up to {lsn} within {deadline:g} s")
            time.sleep(0.02)


def primary_lsn(url: str) -> str:
    """The primary's WAL insert position now: what a replica must replay to show every commit so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="session")
def template_db(pg: PgServer) -> str:
    """A database with the whole plan deployed, to clone from; its name."""
    name = f"cc_template_{uuid.uuid4().hex[:8]}"
    url = pg.create_db(name)
    Deployer(url, ROOT).deploy()
    return name


@pytest.fixture(scope="session")
def authenticator_password(pg: PgServer, template_db: str) -> str:
    """The gateway's login gets a password for this run (roles are cluster-wide)."""
    password = uuid.uuid4().hex
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("alter role authenticator password {}").format(sql.Literal(password)))
    return password


@contextlib.contextmanager
def stripe_client(api_key: str, api_base: str, *, retries: int = 0) -> Iterator[stripe.StripeClient]:
    """A synchronous client for a test's own calls to the stand-in (what a Stripe dashboard or a check
    would do), on one requests session closed afterwards: by default the SDK opens a session per thread,
    whose sockets would outlive the test. (The gateway's own client is asynchronous, see
    gateway.payments.client.)"""
    session = requests.Session()
    try:
        yield stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=retries,
            http_client=stripe.RequestsClient(timeout=(5.0, 10.0), session=session),
        )
    finally:
        session.close()


def login_url(url: str, user: str, password: str) -> str:
    """The same database as `url`, logged in as another role."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def test_db(pg: PgServer, template_db: str) -> str:
    """A session-wide clone for tests that roll back; its URL."""
    return pg.create_db(f"cc_test_{uuid.uuid4().hex[:8]}", template=template_db)


@pytest.fixture
def fresh_db(pg: PgServer, template_db: str) -> Iterator[str]:
    """A committed clone of the template for one test (concurrency, commits); its URL. Dropped after."""
    name = f"cc_fresh_{uuid.uuid4().hex[:8]}"
    url = pg.create_db(name, template=template_db)
    yield url
    pg.drop_db(name)


class Session:
    """A connection inside one transaction that is rolled back at the end of the test."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        rows = conn.execute(gwdb.ROLE_SETTINGS_QUERY).fetchall()
        self.role_settings = gwdb.parse_role_settings(rows)

    def as_role(self, role: str, claims: Mapping[str, Any] | None = None, request_id: str = "") -> None:
        """Switch the transaction to a request role with JWT claims, exactly as the gateway does."""
        self.conn.execute("reset role")
        query, params = gwdb.request_context(role, claims, self.role_settings, request_id=request_id)
        self.conn.execute(query, params)

    def as_superuser(self) -> None:
        self.conn.execute("reset role")

    def one(self, query: str, params: Any = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None, f"no row from {query}"
        return row[0]

    def all(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    @contextlib.contextmanager
    def raises(self, sqlstate: str) -> Iterator[pytest.ExceptionInfo[psycopg.Error]]:
        """Expect an error with this SQLSTATE; a savepoint keeps the test's transaction usable."""
        with pytest.raises(psycopg.Error) as info, self.conn.transaction():
            yield info
        assert info.value.sqlstate == sqlstate, (
            f"expected {sqlstate}, got {info.value.sqlstate}: {info.value}"
        )

    @staticmethod
    def claims(sub: int | str, role: str = "app_readwrite") -> dict[str, Any]:
        return {"sub": str(sub), "role": role}


@pytest.fixture
def db(test_db: str) -> Iterator[Session]:
    """A rolled-back transaction on the deployed database, as the superuser until `as_role`."""
    with psycopg.connect(test_db) as conn, conn.transaction(force_rollback=True):
        yield Session(conn)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class ServedGateway:
    """`commercecore serve` (one worker: the process answering requests is `process`) and its base URL."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        """The worker's resident memory now, from /proc (VmRSS)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for process {self.process.pid}")


@contextlib.contextmanager
def served_gateway(database_url: str, directory: Path, **env: str) -> Iterator[ServedGateway]:
    """`commercecore serve` on a free loopback port against `database_url` (the authenticator), as
    production runs it (uvicorn, httptools with the gateway's request limits); stopped with SIGINT after."""
    port = embedded.free_port()
    environ = {
        **os.environ,
        "DATABASE_URL": database_url,
        "COMMERCECORE_JWT_SECRET": secrets.token_urlsafe(48),
        "COMMERCECORE_COOKIE_SECURE": "false",
        "STRIPE_SECRET_KEY": "sk_test_" + secrets.token_hex(8),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        **env,
    }
    log = directory / f"gateway-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "commercecore.cli", "serve", "--port", str(port)],
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    served = ServedGateway(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while not _answers(served.url + "/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"commercecore serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
