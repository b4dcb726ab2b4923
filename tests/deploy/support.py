"""Helpers of the deployer tests: the toy sqitch project, real sqitch, registry snapshots.

The toy project (fixtures/toy) mirrors the product's sqitch.conf (deploy_dir = ., revert and verify
dirs, deploy.verify) and has two tags and a reworked change, so the ids, the `name@tag.sql` files and
the registry rows are exercised the way the product will exercise them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from commercecore.deploy.engine import Deployer, Reporter
from tests.conftest import PgServer

FIXTURES = Path(__file__).parent / "fixtures"
SQITCH = shutil.which("sqitch")
requires_sqitch = pytest.mark.skipif(
    SQITCH is None, reason="the sqitch CLI is not installed (apt install sqitch)"
)

OUR_NAME, OUR_EMAIL = "Py Deployer", "py@example.com"
SQITCH_NAME, SQITCH_EMAIL = "Sqitch Runner", "runner@example.com"


@dataclass
class Toy:
    """A writable copy of the toy project and the environment both tools run with."""

    dir: Path
    env: dict[str, str]  # for our Deployer: no user or system sqitch config of this machine
    sqitch_env: dict[str, str]  # for the sqitch CLI: also the PG 18 psql, another committer

    def deployer(
        self,
        url: str,
        *,
        reporter: Reporter | None = None,
        registry_lock_timeout: float = 60.0,
        lock_timeout: float | None = None,
        lock_retries: int | None = None,
        lock_retry_delay: float | None = None,
    ) -> Deployer:
        return Deployer(
            url,
            self.dir,
            env=self.env,
            reporter=reporter,
            registry_lock_timeout=registry_lock_timeout,
            lock_timeout=lock_timeout,
            lock_retries=lock_retries,
            lock_retry_delay=lock_retry_delay,
        )

    def sqitch(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert SQITCH is not None
        proc = subprocess.run(
            [SQITCH, *args], cwd=self.dir, env=self.sqitch_env, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            pytest.fail(f"sqitch {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


def sqitch_target(url: str) -> str:
    """The same database as a sqitch target URI."""
    assert url.startswith(("postgresql://", "postgres://"))
    return "db:pg:" + url.split(":", 1)[1]


def schema_dump(pg: PgServer, url: str) -> str:
    """pg_dump --schema-only, without the random \\restrict key pg_dump 17+ writes per run."""
    proc = subprocess.run(
        [str(pg.bin("pg_dump")), "--schema-only", "--no-owner", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return "\n".join(
        line for line in proc.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


REGISTRY_QUERIES = {
    "projects": "select project, uri from sqitch.projects order by project",
    "releases": "select version from sqitch.releases order by version",
    "changes": (
        "select change_id, script_hash, change, project, note, planned_at, planner_name, planner_email"
        " from sqitch.changes order by committed_at"
    ),
    "tags": (
        "select tag_id, tag, project, change_id, note, planned_at, planner_name, planner_email"
        " from sqitch.tags order by tag"
    ),
    "dependencies": (
        "select change_id, type, dependency, dependency_id from sqitch.dependencies"
        " order by change_id, dependency"
    ),
}


def registry_rows(
    url: str, tables: tuple[str, ...] = ("projects", "changes", "tags", "dependencies")
) -> dict[str, list[tuple[object, ...]]]:
    """Registry rows without who/when columns, comparable between databases and between runs."""
    with psycopg.connect(url) as conn:
        return {table: conn.execute(REGISTRY_QUERIES[table]).fetchall() for table in tables}


def events(url: str) -> list[tuple[object, ...]]:
    """The event log oldest first, without committed_at."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select event, change_id, change, project, note, requires, conflicts, tags, committer_name,"
            " committer_email, planned_at, planner_name, planner_email"
            " from sqitch.events order by committed_at"
        ).fetchall()


class Recorder:
    """A Reporter that keeps what the deployer reported."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.steps: list[tuple[str, str, bool]] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def step(self, action: str, name: str, ok: bool) -> None:
        self.steps.append((action, name, ok))
