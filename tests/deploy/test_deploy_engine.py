"""The deployer on its own: references, the lock, late tags, registry upgrades, the event log."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources

import psycopg
import pytest
from psycopg import sql

from commercecore.deploy.engine import Deployer
from commercecore.deploy.errors import DeployError
from commercecore.deploy.plan import Change
from commercecore.deploy.registry import LOCK_KEY, DeployedChange
from tests.conftest import PgServer
from tests.deploy.support import Recorder, Toy, registry_rows, schema_dump


def names(changes: Sequence[Change | DeployedChange]) -> list[str]:
    return [change.name for change in changes]


def test_deploy_and_revert_by_reference(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    ours = toy.deployer(url)
    assert names(ours.deploy("tables/users")) == ["schema/app", "tables/users"]
    assert ours.deploy("tables/users") == []
    with pytest.raises(DeployError, match='Cannot deploy to an earlier change; use "revert" instead'):
        ours.deploy("schema/app")
    with pytest.raises(DeployError, match='Unknown change: "nope"'):
        ours.deploy("nope")
    with pytest.raises(DeployError, match='Change "functions/greet" is ambiguous'):
        ours.deploy("functions/greet")
    assert names(ours.deploy("@v1.0")) == ["functions/greet"]
    assert names(ours.deploy("@HEAD^")) == ["functions/greet"]
    assert names(ours.deploy()) == ["tables/orders"]

    with pytest.raises(DeployError, match='Change "functions/greet" is ambiguous'):
        ours.revert("functions/greet")
    assert names(ours.revert("functions/greet@v1.0")) == ["tables/orders", "functions/greet"]
    assert names(ours.revert("@HEAD^")) == ["functions/greet"]
    with pytest.raises(DeployError, match='Change not deployed: "tables/orders"'):
        ours.revert("tables/orders")
    with pytest.raises(DeployError, match='Unknown change: "nope"'):
        ours.revert("nope")
    assert ours.revert("@HEAD") == []
    assert names(ours.revert("@ROOT")) == ["tables/users"]
    assert names(ours.revert()) == ["schema/app"]
    assert ours.revert() == []


def test_revert_asks_before_it_does_anything(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    ours = toy.deployer(url)
    ours.deploy()
    questions: list[str] = []

    def refuse(question: str) -> bool:
        questions.append(question)
        return False

    with pytest.raises(DeployError, match="Nothing reverted"):
        ours.revert("@v1.0", confirm=refuse)
    assert questions == [f"Revert changes to functions/greet @v1.0 from {ours.destination}?"]
    assert len(registry_rows(url)["changes"]) == 5


def test_status_and_log(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    ours = toy.deployer(url)
    assert ours.log() == []
    state = ours.status()
    assert state.head is None
    assert len(state.pending) == 5
    ours.deploy("@v1.0")
    ours.revert("@HEAD^")
    state = ours.status()
    assert state.head is not None
    assert state.head.format_name_with_tags == "tables/users"
    assert [change.format_name_with_tags for change in state.pending] == [
        "functions/greet @v1.0",
        "functions/greet",
        "tables/orders @v1.1",
    ]
    log = ours.log()
    assert [(event.event, event.change) for event in log] == [
        ("revert", "functions/greet"),
        ("deploy", "functions/greet"),
        ("deploy", "tables/users"),
        ("deploy", "schema/app"),
    ]
    assert log[0].tags == ("@v1.0",)
    assert log[0].requires == ("tables/users",)
    assert log[2].conflicts == ("legacy:users",)
    assert {(event.committer_name, event.committer_email) for event in log} == {
        ("Py Deployer", "py@example.com")
    }
    assert [event.event for event in ours.log(limit=1)] == ["revert"]


def test_a_second_run_waits_for_the_lock_then_gives_up(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    recorder = Recorder()
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(
            DeployError, match=r"Timed out waiting 0\.2 seconds for another instance of Sqitch"
        ):
            toy.deployer(url, reporter=recorder, registry_lock_timeout=0.2).deploy()
    assert any(line.startswith("Blocked by another instance of Sqitch") for line in recorder.lines)
    with psycopg.connect(url) as conn:
        # the lock comes first: not even the registry was created
        assert conn.execute("select count(*) from pg_namespace where nspname = 'sqitch'").fetchone() == (0,)


def test_tags_planned_after_deployment_are_recorded(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    ours = toy.deployer(url)
    ours.deploy()
    with (toy.dir / "sqitch.plan").open("a") as plan:
        plan.write("@v1.2 2024-03-01T00:00:00Z Ann Planner <ann@example.com> # late tag\n")
    recorder = Recorder()
    late = toy.deployer(url, reporter=recorder)
    assert late.deploy() == []
    assert recorder.lines == ["Nothing to deploy (up-to-date)"]
    tags = registry_rows(url, ("tags",))["tags"]
    assert [row[1] for row in tags] == ["@v1.0", "@v1.1", "@v1.2"]
    assert tags[2][0] == late.plan.tags[-1].id
    assert tags[2][4] == "late tag"


def test_registry_1_0_is_upgraded_like_sqitch_does(toy: Toy, new_db: Callable[[], str], pg: PgServer) -> None:
    fresh, old = new_db(), new_db()
    toy.deployer(fresh).deploy("schema/app")
    text = resources.files("commercecore.deploy").joinpath("registry.sql").read_text()
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute(sql.SQL(text).format(registry=sql.Identifier("sqitch")))
        # what a sqitch 0.9999 registry looked like: release 1.0, script hashes unique per database
        conn.execute("alter table sqitch.changes drop constraint changes_project_script_hash_key")
        conn.execute("alter table sqitch.changes add unique (script_hash)")
        conn.execute("comment on schema sqitch is 'Sqitch database deployment metadata v1.0.'")
        conn.execute("insert into sqitch.releases values (1.0, clock_timestamp(), 'old', 'old@example.com')")
    recorder = Recorder()
    toy.deployer(old, reporter=recorder).deploy("schema/app")
    assert "Upgraded the Sqitch registry from 1.0 to 1.1" in recorder.lines
    assert registry_rows(old, ("releases",))["releases"] == [(1.0,), (1.1,)]
    assert schema_dump(pg, old) == schema_dump(pg, fresh)


def test_a_newer_registry_is_refused(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    ours = toy.deployer(url)
    ours.deploy("schema/app")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into sqitch.releases values (9.0, clock_timestamp(), 'future', 'f@example.com')")
    with pytest.raises(DeployError, match=r"Registry version is 9\.0 but 1\.1 is the latest known"):
        ours.deploy()
    with pytest.raises(DeployError, match=r"Registry version is 9\.0"):
        ours.revert()


def test_revert_needs_a_registry(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    with pytest.raises(DeployError, match=r"No registry found in .*Have you ever deployed"):
        toy.deployer(url).revert()
    with pytest.raises(DeployError, match="No registry found"):
        toy.deployer(url).verify()


def test_sqitch_target_urls_and_committer_from_config(toy: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    config = toy.dir / "sqitch.conf"
    config.write_text(config.read_text() + "[user]\n\tname = Conf User\n\temail = conf@example.com\n")
    env = {key: value for key, value in toy.env.items() if not key.startswith("SQITCH_FULLNAME")}
    env.pop("SQITCH_EMAIL")
    target = "db:pg:" + url.split(":", 1)[1]
    ours = Deployer(target, toy.dir, env=env)
    assert ours.identity.name == "Conf User"
    assert ours.identity.email == "conf@example.com"
    ours.deploy("schema/app")
    with psycopg.connect(url) as conn:
        row = conn.execute("select committer_name, committer_email from sqitch.changes").fetchone()
        release = conn.execute("select installer_name from sqitch.releases").fetchone()
    assert row == ("Conf User", "conf@example.com")
    assert release == ("Conf User",)


@pytest.mark.parametrize(
    ("mode", "head"),
    [("all", "schema/app"), ("tag", "tables/orders"), ("change", "tables/extra")],
)
def test_deploy_modes_decide_what_a_failure_reverts(
    toy: Toy, new_db: Callable[[], str], mode: str, head: str
) -> None:
    url = new_db()
    toy.deployer(url).deploy("schema/app")
    who = "2024-02-01T00:00:00Z Cee <cee@example.com>"
    with (toy.dir / "sqitch.plan").open("a") as plan:
        plan.write(f"tables/extra {who}\ntables/broken {who}\n")
    for name, deploy in (("tables/extra", "create table app.extra ();"), ("tables/broken", "select 1/0;")):
        (toy.dir / f"{name}.sql").write_text(deploy + "\n")
        (toy.dir / "revert" / f"{name}.sql").write_text(f"drop table if exists app.{name.split('/')[1]};\n")
    with pytest.raises(DeployError, match=r"tables/broken\.sql:1: division by zero"):
        Deployer(url, toy.dir, env=toy.env, mode=mode).deploy()
    state = toy.deployer(url).status()
    assert state.head is not None
    assert state.head.name == head
