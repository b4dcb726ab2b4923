"""Plain SQL dumps restore as archives do: the shell wrappers' `backup.sh --plain` then `restore.sh <file>.sql
--force` bring the data back; a checksum beside the script is checked; a script that would leave the
staging database, or that fails half-way, leaves the existing database as it was."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from commercecore.local import seed
from commercecore.ops import backup
from tests.conftest import PgServer
from tests.ops.helpers import cli, create_order, demo_customer, error_line, in_stock, snapshot

ROOT = Path(__file__).resolve().parents[2]


def wrapper(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """db/backups/<name> as cron runs it: no DATABASE_URL, the URL on the command line."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        ["bash", str(ROOT / "db/backups" / name), *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def leftover_staging(url: str) -> list[tuple[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("select datname from pg_database where datname like '%\\_restore\\_%'").fetchall()


def test_backup_sh_plain_then_restore_sh_sql_brings_the_data_back(fresh_db: str, tmp_path: Path) -> None:
    seed.seed_demo(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        customer = demo_customer(conn)
        first, second = in_stock(conn, 2)
        create_order(conn, customer, [(first, 1), (second, 1)])
    at_backup = snapshot(fresh_db)

    made = wrapper("backup.sh", "--plain", "--db-url", fresh_db, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    [script] = sorted(tmp_path.glob("backup_cc_fresh_*.sql"))
    # it says where it wrote, in full
    assert f"written to {script.with_suffix('.dump')} (" in made.stdout
    assert f"plain SQL: {script}" in made.stdout

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        create_order(conn, customer, [(first, 2)])
        conn.execute("update core.products set price_minor = price_minor + 1 where id = %s", [second])
        conn.execute("delete from auth.credentials")
    assert snapshot(fresh_db)["tables"] != at_backup["tables"]

    restored = wrapper("restore.sh", str(script), "--force", "--db-url", fresh_db)
    assert restored.returncode == 0, restored.stderr
    assert "replaced" in restored.stdout
    assert f"note: checksum verified ({script.with_suffix('.sha256').name})" in restored.stdout
    assert "up to date" in restored.stdout  # the sqitch registry came back with the data

    after = snapshot(fresh_db)
    assert after["tables"] == at_backup["tables"]  # row counts and checksums of every table
    assert after["sequences"] == at_backup["sequences"]
    assert (
        after["acl"] == at_backup["acl"]
    )  # taken from the database it replaced: PUBLIC still cannot connect
    assert leftover_staging(fresh_db) == []


@pytest.fixture
def plain_script(fresh_db: str, tmp_path: Path) -> tuple[str, Path]:
    seed.seed_demo(fresh_db)
    made = backup.backup(fresh_db, tmp_path, plain=True)
    assert made.plain is not None
    return fresh_db, made.plain


def _refused(url: str, script: Path, *extra: str) -> str:
    before = snapshot(url)
    result = cli("db", "restore", str(script), "--database-url", url, *extra)
    assert result.exit_code == 1, result.output
    assert snapshot(url) == before
    assert leftover_staging(url) == []
    return error_line(result)


def test_a_changed_script_is_refused_by_its_checksum(plain_script: tuple[str, Path]) -> None:
    url, script = plain_script
    script.write_text(script.read_text() + "\nUPDATE core.products SET price_minor = 1;\n")
    assert "does not match its checksum" in _refused(url, script, "--force")


def test_a_create_script_is_refused(plain_script: tuple[str, Path]) -> None:
    url, script = plain_script
    text = script.read_text()
    script.write_text("-- PostgreSQL database dump\nCREATE DATABASE other;\n\\connect other\n" + text)
    script.with_suffix(".sha256").unlink()
    line = _refused(url, script, "--force")
    assert f"{script.name}:2: the script creates or connects to a database" in line


def test_a_script_failing_half_way_leaves_the_database_as_it_was(plain_script: tuple[str, Path]) -> None:
    url, script = plain_script
    script.write_text(script.read_text() + "\nGRANT SELECT ON core.products TO cc_no_such_role;\n")
    script.with_suffix(".sha256").unlink()
    line = _refused(url, script, "--force")
    assert "psql failed" in line
    assert 'role "cc_no_such_role" does not exist' in line


def test_a_plain_pg_dump_without_checksum_restores_beside_under_a_given_name(
    pg: PgServer, plain_script: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ours = plain_script
    # as a seed's own backup.sh would have written it: pg_dump's default output, no checksum
    dumped = tmp_path / "nightly.sql"
    subprocess.run([str(pg.bin("pg_dump")), f"--file={dumped}", url], check=True, capture_output=True)
    assert "does not name its database" in _refused(url, dumped)

    drill = f"{url.rsplit('/', 1)[1]}_plain"
    try:
        result = cli("db", "restore", str(dumped), "--database-url", url, "--target-db", drill)
        assert result.exit_code == 0, result.output
        assert "created" in result.stdout
        assert "note: no checksum file nightly.sha256: the script was not verified" in result.stdout
        # nothing to take the database's own settings from: said, not guessed
        assert "this server has no database to take them from" in result.stdout
        assert snapshot(pg.url(drill))["tables"] == snapshot(url)["tables"]
    finally:
        pg.drop_db(drill)
