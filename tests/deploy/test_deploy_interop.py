"""The real sqitch and our deployer take turns on one database, and write the same registry."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import PgServer
from tests.deploy.support import (
    OUR_NAME,
    SQITCH_NAME,
    Toy,
    events,
    registry_rows,
    requires_sqitch,
    schema_dump,
    sqitch_target,
)

pytestmark = [pytest.mark.sqitch, requires_sqitch]


def test_sqitch_accepts_what_we_deployed_and_we_accept_what_it_reverted(
    toy: Toy, new_db: Callable[[], str]
) -> None:
    url = new_db()
    target = sqitch_target(url)
    ours = toy.deployer(url)
    assert [change.name for change in ours.deploy()] == [
        "schema/app",
        "tables/users",
        "functions/greet",
        "functions/greet",
        "tables/orders",
    ]

    status = toy.sqitch("status", target)
    assert "Nothing to deploy (up-to-date)" in status.stdout
    assert "# Tag:      @v1.1" in status.stdout
    assert "Verify successful" in toy.sqitch("verify", target).stdout

    toy.sqitch("revert", "-y", "--to", "@HEAD^", target)
    state = ours.status()
    assert state.head is not None
    assert state.head.name == "functions/greet"
    assert state.head.tags == ()
    assert [change.format_name_with_tags for change in state.pending] == ["tables/orders @v1.1"]

    assert [change.name for change in ours.deploy()] == ["tables/orders"]
    log = toy.sqitch("log", "--no-color", "--format", "format:%e|%n|%{name}c", target).stdout.splitlines()
    assert log[1:4] == [
        f"deploy|tables/orders|{OUR_NAME}",
        f"revert|tables/orders|{SQITCH_NAME}",
        f"deploy|tables/orders|{OUR_NAME}",
    ]
    assert "Verify successful" in toy.sqitch("verify", target).stdout
    assert "Nothing to deploy (up-to-date)" in toy.sqitch("status", target).stdout


def test_both_tools_write_the_same_registry(toy: Toy, new_db: Callable[[], str], pg: PgServer) -> None:
    by_sqitch, by_us = new_db(), new_db()
    toy.sqitch("deploy", sqitch_target(by_sqitch))
    toy.deployer(by_us).deploy()

    tables = ("projects", "releases", "changes", "tags", "dependencies")
    assert registry_rows(by_us, tables) == registry_rows(by_sqitch, tables)
    theirs = [row[:8] + row[10:] for row in events(by_sqitch)]
    assert [row[:8] + row[10:] for row in events(by_us)] == theirs
    assert {row[8:10] for row in events(by_us)} == {("Py Deployer", "py@example.com")}
    # the whole schema, the registry's tables, constraints and comments included
    assert schema_dump(pg, by_us) == schema_dump(pg, by_sqitch)

    changes = registry_rows(by_us, ("changes",))["changes"]
    assert len(changes) == 5
    assert all(row[1] for row in changes)


def test_revert_by_each_tool_leaves_the_same_registry(
    toy: Toy, new_db: Callable[[], str], pg: PgServer
) -> None:
    reverted_by_sqitch, reverted_by_us = new_db(), new_db()
    for url in (reverted_by_sqitch, reverted_by_us):
        toy.deployer(url).deploy()
    toy.sqitch("revert", "-y", "--to", "@v1.0", sqitch_target(reverted_by_sqitch))
    toy.deployer(reverted_by_us).revert("@v1.0")
    assert registry_rows(reverted_by_us) == registry_rows(reverted_by_sqitch)
    assert [row[:8] for row in events(reverted_by_us)] == [row[:8] for row in events(reverted_by_sqitch)]

    # the reworked change's old revert script (revert/functions/greet@v1.0.sql) drops the function
    toy.sqitch("revert", "-y", sqitch_target(reverted_by_sqitch))
    toy.deployer(reverted_by_us).revert()
    assert registry_rows(reverted_by_us) == registry_rows(reverted_by_sqitch)
    with psycopg.connect(reverted_by_us) as conn:
        assert conn.execute("select count(*) from pg_namespace where nspname = 'app'").fetchone() == (0,)
    assert schema_dump(pg, reverted_by_us) == schema_dump(pg, reverted_by_sqitch)


def test_sqitch_deploys_then_we_verify_and_revert(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    toy.sqitch("deploy", "--to", "@v1.0", sqitch_target(url))
    ours = toy.deployer(url)
    report = ours.verify()
    assert [result.change for result in report.results] == [
        "schema/app",
        "tables/users",
        "functions/greet @v1.0",
    ]
    assert report.pending == ["functions/greet", "tables/orders @v1.1"]
    assert [change.name for change in ours.deploy()] == ["functions/greet", "tables/orders"]
    assert [change.name for change in ours.revert("tables/users")] == [
        "tables/orders",
        "functions/greet",
        "functions/greet",
    ]
    assert "Undeployed changes:" in toy.sqitch("status", sqitch_target(url)).stdout
    toy.sqitch("deploy", sqitch_target(url))
    assert ours.status().pending == []
