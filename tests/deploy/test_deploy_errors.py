"""Bad input through `commercecore db`: one line on stderr naming file and line, exit 1, and the
database (schema and registry) exactly as it was before the command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from commercecore.cli import main
from commercecore.deploy.engine import Deployer
from commercecore.deploy.errors import DeployError
from tests.conftest import PgServer
from tests.deploy.support import Toy, events, registry_rows, requires_sqitch, schema_dump, sqitch_target

WHO = "2024-02-01T00:00:00Z Cee <cee@example.com>"


@dataclass(frozen=True)
class Snapshot:
    schema: str
    registry: dict[str, list[tuple[object, ...]]]
    events: list[tuple[object, ...]]


def snapshot(pg: PgServer, url: str) -> Snapshot:
    return Snapshot(schema_dump(pg, url), registry_rows(url), events(url))


def cli(toy: Toy, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(
        main, ["db", *args, "--plan-file", str(toy.dir / "sqitch.plan")], env=toy.env, input=stdin
    )


def assert_one_error_line(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def add_change(
    toy: Toy, name: str, deploy: str | None, revert: str = "", verify: str = "", deps: str = ""
) -> None:
    """Append a change to the toy plan, with whichever scripts are given."""
    with (toy.dir / "sqitch.plan").open("a") as plan:
        plan.write(f"{name} {f'[{deps}] ' if deps else ''}{WHO}\n")
    for folder, text in (("", deploy), ("revert", revert), ("verify", verify)):
        if text is None:
            continue
        path = toy.dir / folder / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def deployed(toy: Toy, new_db: Callable[[], str], pg: PgServer) -> tuple[str, Snapshot]:
    """The toy project deployed through @v1.0 (two changes remain pending); its URL and snapshot."""
    url = new_db()
    toy.deployer(url).deploy("@v1.0")
    return url, snapshot(pg, url)


def test_malformed_plan_line(toy: Toy, deployed: tuple[str, Snapshot], pg: PgServer) -> None:
    url, before = deployed
    with (toy.dir / "sqitch.plan").open("a") as plan:
        plan.write("tables/broken 2024-02-01T00:00:00Z\n")
    result = cli(toy, "deploy", "--db-url", url)
    assert_one_error_line(result, "PlanError:", "sqitch.plan:13: Missing planner name and email")
    assert snapshot(pg, url) == before


def test_missing_script_is_named_before_anything_runs(
    toy: Toy, deployed: tuple[str, Snapshot], pg: PgServer
) -> None:
    url, before = deployed
    add_change(toy, "tables/extra", deploy=None, revert="drop table app.extra;\n", deps="tables/orders")
    result = cli(toy, "deploy", "--db-url", url)
    assert_one_error_line(result, "ScriptError:", "tables/extra.sql: script not found")
    assert snapshot(pg, url) == before


@pytest.mark.parametrize(
    ("script", "line", "message"),
    [
        # a syntax error: the server's position, counted from the statement, gives the line
        (
            "begin;\n\ncreate table app.broken (\n  id bigint,\n  name txet oops\n);\n\ncommit;\n",
            5,
            "syntax error",
        ),
        # no position for this one: the line where the failing statement starts
        (
            "begin;\n\ncreate table app.broken (\n  user_id bigint references app.nope (id)\n);\ncommit;\n",
            3,
            "app.nope",
        ),
        # a DO block: PL/pgSQL's own line number inside the body
        ("-- header\ndo $$\nbegin\n  perform 1;\n  raise exception 'boom';\nend $$;\n", 5, "boom"),
    ],
    ids=["syntax-error", "runtime-error", "do-block"],
)
def test_failing_deploy_script_reverts_the_run(
    toy: Toy, deployed: tuple[str, Snapshot], pg: PgServer, script: str, line: int, message: str
) -> None:
    url, before = deployed
    add_change(
        toy, "tables/broken", deploy=script, revert="drop table if exists app.broken;\n", deps="tables/orders"
    )
    result = cli(toy, "deploy", "--db-url", url)
    assert_one_error_line(result, "ScriptError:", f"tables/broken.sql:{line}:", message)
    after = snapshot(pg, url)
    assert (after.schema, after.registry) == (before.schema, before.registry)
    # sqitch's trail: the run's deploys, the failure, then the run reverted newest first
    new_events = [(row[0], row[2]) for row in after.events[len(before.events) :]]
    assert new_events == [
        ("deploy", "functions/greet"),
        ("deploy", "tables/orders"),
        ("fail", "tables/broken"),
        ("revert", "tables/orders"),
        ("revert", "functions/greet"),
    ]
    assert "  + tables/orders @v1.1 .. ok" in result.stdout
    assert "  + tables/broken .. not ok" in result.stdout


def test_failing_verify_script_reverts_its_change_too(
    toy: Toy, deployed: tuple[str, Snapshot], pg: PgServer
) -> None:
    url, before = deployed
    add_change(
        toy,
        "tables/extra",
        deploy="create table app.extra (id int);\n",
        revert="drop table app.extra;\n",
        verify="-- Verify\n\nselect 1 / count(*) from app.extra;\n",
        deps="tables/orders",
    )
    result = cli(toy, "deploy", "--db-url", url)
    assert_one_error_line(result, "ScriptError:", "verify/tables/extra.sql:3:", "division by zero")
    after = snapshot(pg, url)
    assert (after.schema, after.registry) == (before.schema, before.registry)
    assert [row[0] for row in after.events[len(before.events) :]] == [
        "deploy",
        "deploy",
        "fail",
        "revert",
        "revert",
    ]


def test_unsatisfied_dependencies_stop_before_anything_runs(
    toy: Toy, deployed: tuple[str, Snapshot], pg: PgServer
) -> None:
    url, before = deployed
    add_change(
        toy, "tables/extra", deploy="create table app.extra ();\n", revert="", deps="other:thing tables/users"
    )
    result = cli(toy, "deploy", "--db-url", url)
    assert_one_error_line(result, "DeployError: Missing required change: other:thing")
    assert snapshot(pg, url) == before


def test_conflict_with_another_projects_change(toy: Toy, new_db: Callable[[], str], tmp_path: Path) -> None:
    url = new_db()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "sqitch.conf").write_text("[core]\n\tengine = pg\n")
    (legacy / "sqitch.plan").write_text(f"%project=legacy\n\nusers {WHO}\n")
    for folder in ("deploy", "revert"):
        (legacy / folder).mkdir()
        (legacy / folder / "users.sql").write_text("select 1;\n")
    toy.deployer(url).deploy("schema/app")
    Deployer(url, legacy, env=toy.env).deploy()
    with pytest.raises(DeployError, match="Conflicts with previously deployed change: legacy:users"):
        toy.deployer(url).deploy()
    with psycopg.connect(url) as conn:
        projects = conn.execute("select project from sqitch.projects order by 1").fetchall()
    assert projects == [("legacy",), ("toy",)]


def test_revert_asks_and_refuses_without_an_answer(
    toy: Toy, deployed: tuple[str, Snapshot], pg: PgServer
) -> None:
    url, before = deployed
    result = cli(toy, "revert", "--database-url", url)
    assert_one_error_line(result, "no answer on stdin", "use -y")
    result = cli(toy, "revert", "--database-url", url, "--to", "@ROOT", stdin="n\n")
    assert_one_error_line(result, "Nothing reverted")
    assert "Revert changes to schema/app from" in result.stdout
    assert snapshot(pg, url) == before

    result = cli(toy, "revert", "--database-url", url, "--to", "schema/app", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "  - tables/users .. ok" in result.stdout
    result = cli(toy, "revert", "-y", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert registry_rows(url)["changes"] == []


def test_cli_status_verify_and_log(toy: Toy, deployed: tuple[str, Snapshot]) -> None:
    url, _ = deployed
    result = cli(toy, "status", "--database-url", sqitch_target(url))
    assert result.exit_code == 0, result.output
    assert "# Name:     functions/greet" in result.stdout
    assert "Undeployed changes:\n  * functions/greet\n  * tables/orders @v1.1" in result.stdout
    result = cli(toy, "verify", "--db-url", url)
    assert result.exit_code == 0, result.output
    assert "Verify successful" in result.stdout
    result = cli(toy, "log", "--db-url", url)
    assert result.exit_code == 0, result.output
    assert result.stdout.index("toy:functions/greet") < result.stdout.index("toy:schema/app")

    (toy.dir / "verify/tables/users.sql").write_text("select nope from app.users;\n")
    result = cli(toy, "verify", "--db-url", url)
    assert_one_error_line(
        result, "VerifyFailed:", "verify/tables/users.sql:1:", 'column "nope" does not exist'
    )
    assert "  * tables/users .. not ok" in result.stdout


def test_unreachable_database_is_one_line(toy: Toy) -> None:
    result = cli(toy, "status", "--db-url", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert_one_error_line(result, "DeployError: cannot connect to postgresql://nobody@127.0.0.1:1/none")


@requires_sqitch
@pytest.mark.sqitch
def test_sqitch_sees_nothing_of_a_failed_run(toy: Toy, deployed: tuple[str, Snapshot]) -> None:
    url, _ = deployed
    add_change(toy, "tables/broken", deploy="select 1/0;\n", revert="select 1;\n", deps="tables/orders")
    assert cli(toy, "deploy", "--db-url", url).exit_code == 1
    status = toy.sqitch("status", sqitch_target(url)).stdout
    assert "# Name:     functions/greet" in status
    assert "Undeployed changes:\n  * functions/greet\n  * tables/orders @v1.1\n  * tables/broken" in status
