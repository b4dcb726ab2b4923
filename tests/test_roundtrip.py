"""Deploy all, revert all, deploy all: the schema is identical, so every revert script is real."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from commercecore.deploy.engine import Deployer
from tests.conftest import ROOT, PgServer


def schema_dump(pg: PgServer, url: str) -> str:
    proc = subprocess.run(
        [str(pg.bin("pg_dump")), "--schema-only", "--exclude-schema=sqitch", url],
        capture_output=True,
        text=True,
        check=True,
    )
    # pg_dump 17+ writes a random \restrict key per run; it is not part of the schema
    lines = proc.stdout.splitlines()
    return "\n".join(line for line in lines if not line.startswith(("\\restrict", "\\unrestrict")))


def test_deploy_revert_deploy_gives_the_same_schema(pg: PgServer, tmp_path: Path) -> None:
    url = pg.create_db("cc_roundtrip")
    try:
        deployer = Deployer(url, ROOT)
        deployer.deploy()
        first = schema_dump(pg, url)
        deployer.revert()
        with psycopg.connect(url) as conn:
            leftover = conn.execute(
                "select count(*) from pg_namespace "
                "where nspname in ('core', 'api', 'auth', 'billing', 'ops', 'audit')"
            ).fetchone()
        assert leftover == (0,)
        deployer.deploy()
        second = schema_dump(pg, url)
        (tmp_path / "first.sql").write_text(first)
        (tmp_path / "second.sql").write_text(second)
        assert "create schema core" in first.lower()
        assert first == second
    finally:
        pg.drop_db("cc_roundtrip")
