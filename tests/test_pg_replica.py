"""`commercecore pg replica start|status|stop` on an embedded cluster of its own (a temporary data directory,
free ports): a replica made by pg_basebackup through a replication slot, streaming and read-only,
stopped and started again on the same data, then removed with its slot."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from commercecore.cli.main import main
from commercecore.local import embedded
from commercecore.local.replica import DEFAULT_SLOT, default_replica
from tests.conftest import primary_lsn, replayed


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The environment of a checkout whose `.data` is a temporary directory; its clusters stopped after."""
    data = tmp_path / "data"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("COMMERCECORE_DATA_DIR", str(data))
    monkeypatch.setenv("COMMERCECORE_PG_PORT", str(embedded.free_port()))
    monkeypatch.setenv("COMMERCECORE_REPLICA_PORT", str(embedded.free_port()))
    try:
        yield data
    finally:
        default_replica().cluster.stop(mode="immediate")
        embedded.default_cluster().stop(mode="immediate")


def slots(primary: embedded.Cluster) -> list[tuple[str, bool]]:
    with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
        return [
            (str(name), bool(active))
            for name, active in conn.execute(
                "select slot_name, active from pg_replication_slots order by slot_name"
            ).fetchall()
        ]


def test_replica_start_status_stop(project: Path) -> None:
    stopped = run("pg", "replica", "status")
    assert stopped.exit_code == 3, stopped.output
    assert "replica stopped" in stopped.output

    started = run("pg", "replica", "start")  # starts the primary first
    assert started.exit_code == 0, started.output
    replica = default_replica()
    primary = replica.primary
    assert f"replica running on 127.0.0.1:{replica.cluster.port}" in started.output
    assert replica.cluster.data_dir == project / "replica"

    with psycopg.connect(primary.url(), autocommit=True) as conn:
        conn.execute("create table streamed (n int)")
        conn.execute("insert into streamed values (42)")
    replayed(replica, primary_lsn(primary.url()))
    assert slots(primary) == [(DEFAULT_SLOT, True)]  # streaming through it
    with psycopg.connect(replica.cluster.url(), autocommit=True) as conn:
        assert conn.execute("select n from streamed").fetchall() == [(42,)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("insert into streamed values (1)")
        identity = conn.execute("select system_identifier from pg_control_system()").fetchone()

    status = run("pg", "replica", "status")
    assert status.exit_code == 0, status.output
    assert f"replica running: pid {replica.cluster.status()}" in status.output
    assert re.search(
        r"received [0-9A-F]+/[0-9A-F]+, replayed [0-9A-F]+/[0-9A-F]+; lag \d+ bytes", status.output
    )
    assert f"slot {DEFAULT_SLOT}: active" in status.output

    assert run("pg", "replica", "stop").exit_code == 0
    until = time.monotonic() + 30
    while slots(primary) != [(DEFAULT_SLOT, False)]:  # the walsender leaves once the replica is gone
        assert time.monotonic() < until, slots(primary)
        time.sleep(0.05)
    after_stop = run("pg", "replica", "status")
    assert after_stop.exit_code == 3
    assert f"slot {DEFAULT_SLOT}: inactive" in after_stop.output  # the slot keeps WAL for its return

    assert run("pg", "replica", "start").exit_code == 0  # the same copy, no second base backup
    with psycopg.connect(replica.cluster.url(), autocommit=True) as conn:
        assert conn.execute("select system_identifier from pg_control_system()").fetchone() == identity
        assert conn.execute("select n from streamed").fetchall() == [(42,)]

    removed = run("pg", "replica", "stop", "--remove")
    assert removed.exit_code == 0, removed.output
    assert slots(primary) == []
    assert not replica.cluster.data_dir.exists()
    assert not replica.cluster.data_dir.is_symlink()
    assert primary.status() is not None  # the primary keeps running
