"""Logical backups: the restore drill (data, sequences and privileges as at the backup, registry clean),
retention, and every way a bad input is refused without touching the existing database."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from commercecore.local import seed
from commercecore.ops import backup
from commercecore.ops.backup import read_checksums, sha256_file
from tests.conftest import PgServer
from tests.ops.helpers import cli, create_order, demo_customer, error_line, in_stock, snapshot


def _only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_restore_drill_brings_back_the_moment_of_the_backup(fresh_db: str, tmp_path: Path) -> None:
    seed.seed_demo(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        customer = demo_customer(conn)
        first, second = in_stock(conn, 2)
        create_order(conn, customer, [(first, 1)])
    at_backup = snapshot(fresh_db)

    result = cli("db", "backup", "--database-url", fresh_db, "--dir", str(tmp_path), "--plain")
    assert result.exit_code == 0, result.output
    dump = _only(tmp_path, "backup_cc_fresh_*.dump")
    assert dump.name.startswith("backup_")
    assert len(dump.stem.rsplit("_", 2)[-1]) == 6
    sums = read_checksums(dump.with_suffix(".sha256"))
    assert sums == {
        dump.name: sha256_file(dump),
        dump.with_suffix(".sql").name: sha256_file(dump.with_suffix(".sql")),
    }
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # a dump holds credential hashes
    assert "CREATE TABLE core.orders" in dump.with_suffix(".sql").read_text()

    # life goes on after the backup: orders, a cancelled one, a deleted address book
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for _ in range(3):
            create_order(conn, customer, [(first, 1), (second, 2)])
        conn.execute("update core.products set price_minor = price_minor + 1 where id = %s", [second])
        conn.execute("delete from auth.credentials")
    assert snapshot(fresh_db) != at_backup

    # a session on the live database: --force terminates it
    bystander = psycopg.connect(fresh_db, autocommit=True)
    try:
        restored = cli("db", "restore", str(dump), "--database-url", fresh_db, "--force", "--jobs", "2")
    finally:
        bystander.close()
    assert restored.exit_code == 0, restored.output
    assert "replaced" in restored.stdout
    assert "up to date" in restored.stdout  # sqitch registry: every deployed change in the plan, none pending

    after = snapshot(fresh_db)
    assert after["tables"] == at_backup["tables"]
    assert after["sequences"] == at_backup["sequences"]
    assert after["acl"] == at_backup["acl"]  # CREATE DATABASE alone would have left PUBLIC with CONNECT
    check = backup.check_registry(fresh_db)
    assert check.clean
    assert not check.pending
    assert check.head is not None
    # no staging database left behind
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        leftovers = conn.execute(
            "select datname from pg_database where datname like '%\\_restore\\_%'"
        ).fetchall()
    assert leftovers == []


def test_restore_beside_the_live_database_and_retention(pg: PgServer, fresh_db: str, tmp_path: Path) -> None:
    stamps = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=n) for n in range(3)]
    made = [backup.backup(fresh_db, tmp_path, keep=2, now=moment) for moment in stamps]
    remaining = sorted(p.name for p in tmp_path.iterdir())
    newest = [m.dump for m in made[1:]]
    assert remaining == sorted([p.name for p in newest] + [p.with_suffix(".sha256").name for p in newest])
    assert made[2].removed == [made[0].dump, made[0].checksum]

    drill = f"{fresh_db.rsplit('/', 1)[1]}_drill"
    try:
        result = cli("db", "restore", str(made[2].dump), "--db-url", fresh_db, "--target-db", drill)
        assert result.exit_code == 0, result.output
        assert "created" in result.stdout
        assert snapshot(pg.url(drill))["tables"] == snapshot(fresh_db)["tables"]
        assert snapshot(pg.url(drill))["acl"] == snapshot(fresh_db)["acl"]
    finally:
        pg.drop_db(drill)


@pytest.fixture
def dumped(fresh_db: str, tmp_path: Path) -> tuple[str, Path]:
    seed.seed_demo(fresh_db)
    return fresh_db, backup.backup(fresh_db, tmp_path).dump


def _restore_refused(url: str, dump: Path, *extra: str) -> str:
    before = snapshot(url)
    result = cli("db", "restore", str(dump), "--database-url", url, *extra)
    assert result.exit_code == 1, result.output
    assert snapshot(url) == before  # the existing database is untouched
    return error_line(result)


def test_truncated_dump_is_refused(dumped: tuple[str, Path]) -> None:
    url, dump = dumped
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) // 2])
    line = _restore_refused(url, dump, "--force")
    assert "does not match its checksum" in line
    assert "truncated" in line


def test_tampered_dump_is_refused(dumped: tuple[str, Path]) -> None:
    url, dump = dumped
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    assert "does not match its checksum" in _restore_refused(url, dump, "--force")


def test_garbage_with_a_matching_checksum_is_refused(dumped: tuple[str, Path]) -> None:
    url, dump = dumped
    dump.write_bytes(b"not a dump at all\n")
    dump.with_suffix(".sha256").write_text(f"{sha256_file(dump)}  {dump.name}\n")
    assert "not a readable pg_dump archive" in _restore_refused(url, dump, "--force")


def test_dump_without_checksum_is_refused(dumped: tuple[str, Path]) -> None:
    url, dump = dumped
    dump.with_suffix(".sha256").unlink()
    assert "no checksum file" in _restore_refused(url, dump, "--force")


def test_wrong_path_is_refused(dumped: tuple[str, Path]) -> None:
    url, dump = dumped
    assert "no such file" in _restore_refused(url, dump.with_name("backup_nope_20260101_000000.dump"))


def test_restore_over_the_live_database_needs_force(dumped: tuple[str, Path]) -> None:
    url, dump = dumped
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update core.products set price_minor = price_minor + 1")  # differs from the dump now
        line = _restore_refused(url, dump)
    assert "exists" in line
    assert "--force" in line
    assert "open connection" in line


def test_old_pg_dump_is_refused_with_its_version(
    fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "pg16"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 16.4'\n")
    fake.chmod(0o755)
    monkeypatch.setenv(backup.BIN_DIR_ENV, str(bin_dir))
    result = cli("db", "backup", "--db-url", fresh_db, "--dir", str(tmp_path / "out"))
    assert result.exit_code == 1
    line = error_line(result)
    with psycopg.connect(fresh_db) as conn:
        server_major = conn.info.server_version // 10000
    assert "pg_dump is PostgreSQL 16" in line
    assert f"runs PostgreSQL {server_major}" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_backup_of_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    result = cli("db", "backup", "--db-url", "postgresql://nobody@127.0.0.1:1/none", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "cannot connect" in error_line(result)
    assert os.listdir(tmp_path) == []


def test_failed_restore_leaves_the_database_as_it_was(dumped: tuple[str, Path], tmp_path: Path) -> None:
    url, _old = dumped
    role = f"cc_gone_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create role {role}")
        conn.execute(f"grant select on core.products to {role}")
    dump = backup.backup(url, tmp_path / "with-grant").dump
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"revoke select on core.products from {role}")
        conn.execute(f"drop role {role}")
    # pg_restore stops at the grant to the missing role, after most of the data went into staging
    line = _restore_refused(url, dump, "--force")
    assert "pg_restore failed" in line
    assert role in line
    with psycopg.connect(url, autocommit=True) as conn:
        leftovers = conn.execute(
            "select datname from pg_database where datname like '%\\_restore\\_%'"
        ).fetchall()
    assert leftovers == []


def test_shell_wrappers_call_the_cli(fresh_db: str, tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    made = subprocess.run(
        ["bash", str(root / "db/backups/backup.sh"), "--db-url", fresh_db, "--dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    dump = _only(tmp_path, "*.dump")
    assert read_checksums(dump.with_suffix(".sha256")) == {dump.name: sha256_file(dump)}
    refused = subprocess.run(
        ["bash", str(root / "db/backups/restore.sh"), str(dump), "--db-url", fresh_db],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "exists" in refused.stderr
    assert "Traceback" not in refused.stderr
