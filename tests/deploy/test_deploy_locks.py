"""Deploying next to live traffic: a change blocked by another session's lock gives up within the lock
timeout, is tried again only when that is safe, and stops naming the blocker with nothing of the run
deployed; a change that runs outside a transaction (`create index concurrently`) deploys with either tool."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from click.testing import CliRunner

from commercecore.cli import main
from commercecore.deploy.locks import DeployBlocked, LockPolicy
from tests.deploy.support import Recorder, Toy, events, registry_rows, requires_sqitch, sqitch_target

HOLDER = "lock-holder-drill"
INDEX_SCRIPT = """-- Deploy toy:indexes/orders_user to pg
-- requires: tables/orders
-- No begin/commit: create index concurrently cannot run inside a transaction block, so the script runs
-- outside one (as psql runs any script), with both tools.

-- a build that stopped part-way leaves an invalid index of this name behind: it goes first
drop index concurrently if exists app.orders_user_id_idx;
create index concurrently if not exists orders_user_id_idx on app.orders (user_id);
"""
INDEX_VALID = (
    "select coalesce(bool_and(i.indisvalid), false) from pg_index as i"
    " where i.indexrelid = to_regclass('app.orders_user_id_idx')"
)


def add_change(toy: Toy, name: str, deploy: str, revert: str, verify: str, requires: str) -> None:
    """A new change at the end of the toy plan, with its three scripts."""
    for folder, body in (("", deploy), ("revert", revert), ("verify", verify)):
        path = toy.dir / folder / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    with (toy.dir / "sqitch.plan").open("a") as plan:
        plan.write(f"{name} [{requires}] 2024-02-01T00:00:00Z Ann Planner <ann@example.com> # {name}\n")


def in_transaction(header: str, statement: str) -> str:
    return f"-- {header}\nbegin;\n{statement}\ncommit;\n"


def add_note_changes(toy: Toy) -> None:
    """Two changes in one run: a new table (nothing blocks it), then a column on app.orders."""
    add_change(
        toy,
        "tables/notes",
        in_transaction("Deploy toy:tables/notes to pg", "create table app.notes (id bigint primary key);"),
        in_transaction("Revert toy:tables/notes from pg", "drop table app.notes;"),
        "-- Verify toy:tables/notes on pg\nselect id from app.notes where false;\n",
        "schema/app",
    )
    add_change(
        toy,
        "tables/orders_note",
        in_transaction("Deploy toy:tables/orders_note to pg", "alter table app.orders add column note text;"),
        in_transaction("Revert toy:tables/orders_note from pg", "alter table app.orders drop column note;"),
        "-- Verify toy:tables/orders_note on pg\nselect note from app.orders where false;\n",
        "tables/orders",
    )


@contextmanager
def lock_held(url: str, mode: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another session holding a lock on app.orders in an open transaction, as a long report would."""
    with psycopg.connect(url, application_name=HOLDER) as holder:
        holder.execute(f"lock table app.orders in {mode} mode")
        yield holder
        holder.rollback()


def column_exists(url: str, table: str, column: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select count(*) from information_schema.columns"
            " where table_schema = 'app' and table_name = %s and column_name = %s",
            [table, column],
        ).fetchone()
    return row == (1,)


def test_a_blocked_change_gives_up_names_the_blocker_and_leaves_nothing_deployed(
    toy: Toy, new_db: Callable[[], str]
) -> None:
    url = new_db()
    toy.deployer(url).deploy()
    add_note_changes(toy)
    before = registry_rows(url)
    recorder = Recorder()
    deployer = toy.deployer(url, reporter=recorder, lock_timeout=0.3, lock_retries=2, lock_retry_delay=0.05)

    with lock_held(url, "access share") as holder:
        started = time.monotonic()
        with pytest.raises(DeployBlocked) as failure:
            deployer.deploy()
        elapsed = time.monotonic() - started
        holder_pid = holder.info.backend_pid

    message = str(failure.value)
    assert message.startswith("tables/orders_note.sql:3: canceling statement due to lock timeout")
    assert (
        "gave up after 3 attempts of lock_timeout 0.3 s (its transaction was rolled back each time)"
        in message
    )
    assert f"pid {holder_pid} (application {HOLDER}, state idle in transaction, query started " in message
    assert [blocker.pid for blocker in failure.value.blockers] == [holder_pid]
    # three waits of the lock timeout and two pauses (0.05 s, 0.1 s); never the holder's whole transaction
    assert 3 * 0.3 <= elapsed < 3 * 0.3 + 0.15 + 5
    retries = [line for line in recorder.warnings if "trying again" in line]
    assert len(retries) == 2
    assert "trying again in 0.05 s (attempt 2 of 3)" in retries[0]
    assert "trying again in 0.1 s (attempt 3 of 3)" in retries[1]

    # nothing half-deployed: the column is not there, the run's first change was reverted (deploy.mode all)
    assert not column_exists(url, "orders", "note")
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('app.notes')").fetchone() == (None,)
    assert registry_rows(url) == before
    # the events say what happened, as sqitch logs them: deploy and revert of the first, fail of the second
    assert [(row[0], row[2]) for row in events(url)[-3:]] == [
        ("deploy", "tables/notes"),
        ("fail", "tables/orders_note"),
        ("revert", "tables/notes"),
    ]

    # the blocker gone, the same deploy goes through
    assert [change.name for change in deployer.deploy()] == ["tables/notes", "tables/orders_note"]
    assert column_exists(url, "orders", "note")


def test_a_statement_outside_a_transaction_is_not_tried_again(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    toy.deployer(url).deploy()
    add_index_change(toy)
    before = registry_rows(url)
    recorder = Recorder()
    deployer = toy.deployer(url, reporter=recorder, lock_timeout=0.3, lock_retries=3, lock_retry_delay=0.05)
    # create index concurrently waits for writers' locks (SHARE UPDATE EXCLUSIVE conflicts with this one)
    with lock_held(url, "share update exclusive") as holder:
        holder_pid = holder.info.backend_pid
        with pytest.raises(DeployBlocked) as failure:
            deployer.deploy()
    message = str(failure.value)
    assert "gave up after 1 attempt of lock_timeout 0.3 s (not tried again" in message
    assert f"pid {holder_pid} (application {HOLDER}" in message
    assert not [line for line in recorder.warnings if "trying again" in line]
    assert registry_rows(url) == before


def test_lock_policy_comes_from_options_then_environment_then_defaults() -> None:
    env = {
        "COMMERCECORE_DEPLOY_LOCK_TIMEOUT": "2s",
        "COMMERCECORE_DEPLOY_LOCK_RETRIES": "5",
        "COMMERCECORE_DEPLOY_LOCK_RETRY_DELAY": "500ms",
    }
    assert LockPolicy.resolve({}) == LockPolicy(5.0, 3, 1.0)
    assert LockPolicy.resolve(env) == LockPolicy(2.0, 5, 0.5)
    assert LockPolicy.resolve(env, 0.0, 0, 0.25) == LockPolicy(0.0, 0, 0.25)
    assert [LockPolicy(5.0, 3, 1.0).delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def add_index_change(toy: Toy) -> None:
    add_change(
        toy,
        "indexes/orders_user",
        INDEX_SCRIPT,
        "-- Revert toy:indexes/orders_user from pg\n"
        "drop index concurrently if exists app.orders_user_id_idx;\n",
        "-- Verify toy:indexes/orders_user on pg\nselect 1 / (" + INDEX_VALID + ")::int;\n",
        "tables/orders",
    )


def index_valid(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(INDEX_VALID).fetchone()
    return row == (True,)


@pytest.mark.sqitch
@requires_sqitch
def test_concurrent_index_change_deploys_with_both_tools(toy: Toy, new_db: Callable[[], str]) -> None:
    by_cli, by_sqitch = new_db(), new_db()
    add_index_change(toy)
    result = CliRunner().invoke(
        main,
        ["db", "deploy", "--database-url", by_cli, "--plan-file", str(toy.dir / "sqitch.plan")],
        env=toy.env,
    )
    assert result.exit_code == 0, result.output
    assert "+ indexes/orders_user .. ok" in result.stdout
    assert index_valid(by_cli)
    toy.sqitch("deploy", sqitch_target(by_sqitch))
    assert index_valid(by_sqitch)
    tables = ("projects", "changes", "tags", "dependencies")
    assert registry_rows(by_cli, tables) == registry_rows(by_sqitch, tables)

    # and back: each tool reverts, with drop index concurrently, what the other deployed
    toy.deployer(by_sqitch).revert("tables/orders")
    toy.sqitch("revert", "-y", "--to", "tables/orders", sqitch_target(by_cli))
    for url in (by_cli, by_sqitch):
        with psycopg.connect(url) as conn:
            assert conn.execute("select to_regclass('app.orders_user_id_idx')").fetchone() == (None,)


def test_db_deploy_takes_the_policy_from_its_options_and_environment(
    toy: Toy, new_db: Callable[[], str]
) -> None:
    url = new_db()
    toy.deployer(url).deploy()
    add_note_changes(toy)
    command = ["db", "deploy", "--database-url", url, "--plan-file", str(toy.dir / "sqitch.plan")]
    env = {**toy.env, "COMMERCECORE_DEPLOY_LOCK_TIMEOUT": "200ms"}
    with lock_held(url, "access share") as holder:
        holder_pid = holder.info.backend_pid
        result = CliRunner().invoke(main, [*command, "--lock-retries", "0"], env=env)
    assert result.exit_code == 1
    assert (
        "error: DeployBlocked: tables/orders_note.sql:3: canceling statement due to lock timeout"
        in result.stderr
    )
    assert "gave up after 1 attempt of lock_timeout 0.2 s" in result.stderr
    assert f"pid {holder_pid} (application {HOLDER}" in result.stderr
    assert "+ tables/notes .. ok" in result.stdout
    assert "- tables/notes .. ok" in result.stdout  # the run reverted
    assert not column_exists(url, "orders", "note")
