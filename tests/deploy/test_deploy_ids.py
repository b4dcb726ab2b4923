"""Change and tag ids, and plan errors, compared with what the real sqitch computes for the same plan."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from commercecore.deploy.errors import PlanError
from commercecore.deploy.plan import canonical_uri, load_plan
from tests.deploy.support import FIXTURES, SQITCH, Toy, requires_sqitch

pytestmark = [pytest.mark.sqitch, requires_sqitch]

WHO = "2024-01-02T03:04:05Z Ann <ann@example.com>"


def sqitch_ids(project: Path, env: dict[str, str]) -> list[str]:
    assert SQITCH is not None
    proc = subprocess.run(
        [SQITCH, "plan", "--no-headers", "--format", "format:%H"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.split()


def sqitch_show(project: Path, env: dict[str, str], kind: str, key: str) -> str:
    assert SQITCH is not None
    proc = subprocess.run(
        [SQITCH, "show", kind, key], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.rstrip("\n")


def test_toy_change_ids_and_infos_match_sqitch(toy: Toy) -> None:
    plan = load_plan(toy.dir / "sqitch.plan")
    assert [change.id for change in plan.changes] == sqitch_ids(toy.dir, toy.sqitch_env)
    # the info text is what the id hashes; the reworked change and the tags are the interesting ones
    reworked = plan.changes[3]
    assert reworked.requires[0].as_string == "functions/greet@v1.0"
    assert sqitch_show(toy.dir, toy.sqitch_env, "change", reworked.id) == reworked.info
    assert sqitch_show(toy.dir, toy.sqitch_env, "change", plan.changes[1].id) == plan.changes[1].info
    for tag in plan.tags:
        assert sqitch_show(toy.dir, toy.sqitch_env, "tag", tag.format_name) == tag.info


def test_edge_case_ids_match_sqitch(toy: Toy, tmp_path: Path) -> None:
    """A uri needing canonicalisation, unicode and escaped notes, every dependency form by name.

    (A dependency written as a change id is left out: sqitch 1.3.1 recurses without end resolving it
    while it builds the plan's id index, and is killed for lack of memory.)
    """
    project = tmp_path / "edge"
    project.mkdir()
    (project / "sqitch.conf").write_text("[core]\n\tengine = pg\n")
    head = (
        "%syntax-version=1.0.0\n%project=edge\n%uri=HTTPS://Example.COM:443/edge\n\n"
        f"roles/base {WHO} # Rôles, ünïcode: 日本\n"
        "a/b [roles/base !other:x other:y@t] 2024-02-03T04:05:06Z Zoë Ünder <zoe@example.com>"
        " # a \\\\ b \\r\\n c\n"
        f"@v1.0 {WHO} # tagged\n@v1.0.1 {WHO}\n\n"
        f"c [edge:a/b @v1.0 roles/base@v1.0] {WHO}\n"
    )
    (project / "sqitch.plan").write_text(head + f"\ne {WHO} #   trimmed note   \n")
    plan = load_plan(project / "sqitch.plan")
    assert plan.changes[1].note == "a \\ b \r\n c"
    assert [change.id for change in plan.changes] == sqitch_ids(project, toy.sqitch_env)
    for tag in plan.tags:
        assert sqitch_show(project, toy.sqitch_env, "tag", tag.format_name) == tag.info


@pytest.mark.parametrize(
    "body",
    [
        f"a {WHO}\nb [a:b:c] {WHO}\n",
        f"a {WHO}\n@v1 {WHO}\nb {WHO}\n@v1 {WHO}\n",
        f"a {WHO}\n\n\nb 2024-01-02T03:04:05Z\n",
        f"a {WHO}\nb {WHO}\na {WHO}\n",
        f"a {WHO}\n#\n",
        f"a {WHO}\n  @v1 [a] {WHO}\n",
        f"a {WHO}\nHEAD {WHO}\n",
    ],
    ids=[
        "bad-dependency",
        "duplicate-tag",
        "missing-planner",
        "duplicate-change",
        "lone-hash",
        "tag-deps",
        "reserved",
    ],
)
def test_plan_errors_name_the_line_sqitch_names(toy: Toy, tmp_path: Path, body: str) -> None:
    (tmp_path / "sqitch.conf").write_text("[core]\n\tengine = pg\n")
    (tmp_path / "sqitch.plan").write_text("%syntax-version=1.0.0\n%project=bad\n\n" + body)
    assert SQITCH is not None
    proc = subprocess.run(
        [SQITCH, "plan"], cwd=tmp_path, env=toy.sqitch_env, capture_output=True, text=True, check=False
    )
    found = re.search(r"Syntax error in sqitch.plan at line (\d+): (.*)", proc.stdout + proc.stderr)
    assert proc.returncode != 0
    assert found is not None
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "sqitch.plan")
    assert info.value.line == int(found.group(1))
    assert info.value.reason == found.group(2)


@pytest.mark.parametrize(
    "uri",
    [
        "HTTPS://Example.COM:443",
        "https://x.org?q=1",
        "https://x.org#f",
        "urn:Foo:Bar",
        "ssh://G@H:22/x",
        "x:%7e%2f",
    ],
)
def test_canonical_uri_matches_perl(uri: str) -> None:
    proc = subprocess.run(
        ["perl", "-MURI", "-e", "print URI->new($ARGV[0])->canonical", uri],
        capture_output=True,
        text=True,
        check=True,
    )
    assert canonical_uri(uri) == proc.stdout


def test_fixture_plan_is_the_one_tested() -> None:
    # the interop tests rely on this shape: a tag, a reworked change, a second tag
    plan = load_plan(FIXTURES / "toy" / "sqitch.plan")
    assert [c.format_name_with_tags for c in plan.changes] == [
        "schema/app",
        "tables/users",
        "functions/greet @v1.0",
        "functions/greet",
        "tables/orders @v1.1",
    ]
