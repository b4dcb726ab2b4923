"""Point-in-time recovery drill on a dedicated embedded cluster with WAL archiving: base backup, orders,
a moment T, more orders and a destructive DELETE; recovery to T (and to an LSN) into a new data directory
brings back exactly what was committed at T, and the live cluster is left as it was."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from commercecore.deploy.engine import Deployer
from commercecore.local import embedded, seed
from commercecore.ops import pitr
from tests.db.shop import no_order_limits
from tests.ops.helpers import cli, create_order, demo_customer, error_line, in_stock

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Drill:
    cluster: embedded.Cluster
    url: str
    backup: Path
    batch1: list[int]
    batch2: list[int]
    moment: str  # T, from the server's clock
    lsn: str  # the WAL position right after batch 1
    items_at_t: int
    tmp: Path


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    tmp = tmp_path_factory.mktemp("pitr")
    cluster = embedded.Cluster(data_dir=tmp / "live" / "data", port=embedded.free_port())
    cluster.init(extra={"fsync": "off", "shared_buffers": "64MB"})
    cluster.start()
    try:
        cluster.ensure_database()
        url = cluster.url()
        Deployer(url, ROOT).deploy()
        seed.seed_demo(url)

        result = cli(
            "db", "basebackup", "--db-url", url, "--dir", str(tmp / "backups"),
            "--archive", str(cluster.wal_archive),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        backup = next((tmp / "backups").glob("base_*"))
        assert (backup / "base.tar").exists()
        assert (backup / "backup_manifest").exists()

        with psycopg.connect(url, autocommit=True) as conn:
            customer = demo_customer(conn)
            products = in_stock(conn, 3)
            batch1 = [create_order(conn, customer, [(p, 1)]) for p in products]
            row = conn.execute("select clock_timestamp()::text, pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            moment, lsn = row
            items = conn.execute("select count(*) from core.order_items").fetchone()
            assert items is not None
        pitr.wait_for_archive(url)  # T's WAL is in the archive

        with psycopg.connect(url, autocommit=True) as conn:
            no_order_limits(conn)  # the same customer's sixth unpaid order
            batch2 = [create_order(conn, customer, [(p, 2)]) for p in products]
            conn.execute("delete from core.order_items")  # the accident to recover from
        pitr.wait_for_archive(url)  # and what came after T too: recovery must see past T to stop there

        yield Drill(cluster, url, backup, batch1, batch2, moment, lsn, int(items[0]), tmp)
    finally:
        cluster.stop(mode="immediate")


def _restored_state(into: Path, port: int) -> tuple[set[int], int, bool]:
    conninfo = f"host={into} port={port} user=postgres dbname=commercecore"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        orders = {int(r[0]) for r in conn.execute("select id from core.orders").fetchall()}
        items = conn.execute("select count(*) from core.order_items").fetchone()
        recovering = conn.execute("select pg_is_in_recovery()").fetchone()
    assert items is not None
    assert recovering is not None
    return orders, int(items[0]), bool(recovering[0])


def _live_state(drill: Drill) -> tuple[set[int], int]:
    with psycopg.connect(drill.url, autocommit=True) as conn:
        orders = {int(r[0]) for r in conn.execute("select id from core.orders").fetchall()}
        items = conn.execute("select count(*) from core.order_items").fetchone()
    assert items is not None
    return orders, int(items[0])


def test_recovery_to_a_time_brings_back_the_moment(drill: Drill) -> None:
    into = drill.tmp / "restored-time"
    port = embedded.free_port()
    live_before = _live_state(drill)
    result = cli(
        "db", "pitr-restore", "--to", drill.moment, "--from", str(drill.backup), "--into", str(into),
        "--port", str(port),
    )  # fmt: skip
    try:
        assert result.exit_code == 0, result.output
        assert "promoted: timeline 2" in result.stdout
        assert "recovery stopping before commit" in result.stdout
        orders, items, recovering = _restored_state(into, port)
    finally:
        embedded.Cluster(data_dir=into, port=port).stop(mode="immediate")
    assert not recovering
    assert set(drill.batch1) <= orders
    assert not set(drill.batch2) & orders
    assert items == drill.items_at_t  # the DELETE never happened here
    # the live cluster is as it was: batch 2 there, the items gone, and still archiving on timeline 1
    assert _live_state(drill) == live_before
    assert set(drill.batch2) <= live_before[0]
    assert live_before[1] == 0


def test_recovery_to_an_lsn(drill: Drill) -> None:
    into = drill.tmp / "restored-lsn"
    recovered = pitr.pitr_restore(drill.backup, into, target_lsn=drill.lsn, timeout=120)
    try:
        assert recovered.timeline == 2
        orders, items, recovering = _restored_state(into, recovered.cluster.port)
    finally:
        recovered.cluster.stop(mode="immediate")
    assert not recovering
    assert set(drill.batch1) <= orders
    assert not set(drill.batch2) & orders
    assert items == drill.items_at_t


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "2000-01-01 00:00:00+00"], "before the base backup started"),
        (["--to", "2026-11-24 15:00:00"], "no UTC offset"),
        (["--to", "yesterday"], "is not a timestamp"),
        (["--to-lsn", "0/1"], "before the end of the base backup"),
        (["--to-lsn", "nowhere"], "is not a WAL location"),
        ([], "exactly one recovery target"),
    ],
)
def test_bad_recovery_targets_are_refused(drill: Drill, args: list[str], message: str) -> None:
    into = drill.tmp / "never"
    result = cli("db", "pitr-restore", *args, "--from", str(drill.backup), "--into", str(into))
    assert result.exit_code == 1
    assert message in error_line(result)
    assert not into.exists()


def test_restore_refuses_a_used_directory(drill: Drill) -> None:
    result = cli(
        "db", "pitr-restore", "--to", drill.moment, "--from", str(drill.backup),
        "--into", str(drill.cluster.data_dir),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not empty" in error_line(result)
    assert drill.cluster.status() is not None  # the live server still runs


def test_damaged_base_backup_is_refused(drill: Drill, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(drill.backup, copy)
    with (copy / "base.tar").open("r+b") as tar:
        tar.seek(4096)
        tar.write(b"\x00garbage\x00")
    result = cli(
        "db", "pitr-restore", "--to", drill.moment, "--from", str(copy), "--into", str(tmp_path / "x")
    )
    assert result.exit_code == 1
    assert "pg_verifybackup failed" in error_line(result)
