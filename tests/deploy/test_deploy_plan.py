"""The plan parser: sqitch's syntax, lookups and errors (file:line: reason), and script file names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from commercecore.deploy.errors import PlanError
from commercecore.deploy.plan import ChangeLookupError, canonical_uri, load_plan, parse_offset, parse_plan
from commercecore.deploy.project import Project
from tests.deploy.support import FIXTURES

HEADER = "%syntax-version=1.0.0\n%project=shop\n\n"
WHO = "2024-01-02T03:04:05Z Ann <ann@example.com>"


def plan_of(body: str, header: str = HEADER) -> str:
    return header + body


def test_pragmas_are_read() -> None:
    plan = parse_plan(
        "%syntax-version=0.9\n  %  project = shop # the shop\n%uri=https://example.com/shop/\n%flag\n\n"
        f"a {WHO}\n"
    )
    assert plan.project == "shop"
    assert plan.uri == "https://example.com/shop/"
    # sqitch records its own syntax version whatever the file says, and a bare pragma is "1"
    assert plan.pragmas == {
        "syntax_version": "1.0.0",
        "project": "shop",
        "uri": "https://example.com/shop/",
        "flag": "1",
    }


def test_changes_tags_notes_and_planners() -> None:
    plan = parse_plan(
        plan_of(
            f"# a comment line\n\nroles/base {WHO} # Roles \\n of the shop  \n"
            "schema/app [roles/base] 2024-02-03T04:05:06Z Bob B. Smith <bob@example.com>\n"
            f"@v1 {WHO} # first\n"
            f"@v1.1 {WHO}\n"
        )
    )
    base, app = plan.changes
    assert (base.name, base.note, base.line) == ("roles/base", "Roles \n of the shop", 6)
    assert (app.planner_name, app.planner_email) == ("Bob B. Smith", "bob@example.com")
    assert app.timestamp == datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert [tag.name for tag in app.tags] == ["v1", "v1.1"]
    assert app.tags[0].note == "first"
    assert app.parent is base
    assert app.format_name_with_tags == "schema/app @v1 @v1.1"
    assert [tag.name for tag in plan.tags] == ["v1", "v1.1"]


def test_dependencies_of_every_kind() -> None:
    sha = "a" * 40
    plan = parse_plan(
        plan_of(f"a {WHO}\n@t1 {WHO}\n\nb [a a@t1 @t1 !gone:x other:thing shop:a {sha}] {WHO}\n")
    )
    b = plan.changes[1]
    assert [dep.as_plan_string for dep in b.requires] == ["a", "a@t1", "@t1", "other:thing", "a", sha]
    assert [dep.as_plan_string for dep in b.conflicts] == ["!gone:x"]
    a_dep, tagged, tag_only, external, own_project, by_id = b.requires
    assert (tagged.change, tagged.tag, tag_only.change, tag_only.tag) == ("a", "t1", None, "t1")
    assert external.is_external
    assert not a_dep.is_external
    # `shop:a` in project shop is just `a`: the prefix is dropped, also from the id
    assert own_project.got_project
    assert own_project.as_string == "a"
    # an id that is not one of this plan's changes belongs to some other project
    assert by_id.got_id
    assert by_id.project is None
    assert by_id.is_external


def test_reworked_change_gets_the_tags_after_it_newest_first() -> None:
    plan = parse_plan(
        plan_of(
            f"f {WHO}\ng {WHO}\n@v1 {WHO}\nh {WHO}\n@v2 {WHO}\n@v2.1 {WHO}\n\n"
            f"f [f@v2] {WHO}\n@v3 {WHO}\n\nf [f@v3] {WHO}\n"
        )
    )
    first, second, third = (c for c in plan.changes if c.name == "f")
    # Plan.pm: tags of each later change newest first, then the old instance's own tags
    assert [tag.name for tag in first.rework_tags] == ["v2", "v2.1", "v1"]
    assert [tag.name for tag in second.rework_tags] == ["v3"]
    assert not third.is_reworked
    assert first.format_tag_qualified_name == "f@v2"
    assert plan.index_of("f@v1") == 0
    assert plan.index_of("f@v2.1") == 0
    assert plan.index_of("f@v3") == 3
    assert plan.index_of("f@HEAD") == 4
    assert plan.find("f") is first  # a bare name finds the first instance
    with pytest.raises(ChangeLookupError, match=r'Change "f" is ambiguous.*f@HEAD, f@v3, f@v2'):
        plan.index_of("f")


def test_symbolic_references() -> None:
    plan = parse_plan(plan_of(f"a {WHO}\nb {WHO}\n@t {WHO}\nc {WHO}\nd {WHO}\n"))
    assert parse_offset("@HEAD^") == ("@HEAD", -1)
    assert parse_offset("HEAD^^") == ("HEAD", -2)
    assert parse_offset("b~3") == ("b", 3)
    assert parse_offset("x.y") == ("x.y", 0)
    assert plan.index_of("@HEAD") == 3
    assert plan.index_of("HEAD^") == 2
    assert plan.index_of("@HEAD^3") == 0
    assert plan.index_of("@HEAD^4") is None
    assert plan.index_of("@ROOT") == 0
    assert plan.index_of("@ROOT~") == 1
    assert plan.index_of("@t") == 1
    assert plan.index_of("@t~2") == 3
    assert plan.index_of(plan.changes[2].id) == 2
    assert plan.index_of(plan.tags[0].id) == 1
    assert plan.index_of("nope") is None
    with pytest.raises(ChangeLookupError, match='Unknown tag "@zz"'):
        plan.index_of("a@zz")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"%project=shop\na {WHO}\n", "sqitch.plan:2: Invalid pragma; a blank line must come between"),
        ("%syntax-version=1.0.0\n\n", "sqitch.plan: Missing %project pragma"),
        ("%project=-shop\n\n", 'sqitch.plan:1: invalid project name "-shop"'),
        (plan_of("a 2024-01-02T03:04:05Z\n"), "sqitch.plan:4: Missing planner name and email"),
        (plan_of("a Ann <ann@example.com>\n"), "sqitch.plan:4: Missing timestamp"),
        (plan_of("a\n"), "sqitch.plan:4: Missing timestamp and planner name and email"),
        (
            plan_of(f"a {WHO}\n-bad- {WHO}\n"),
            "sqitch.plan:5: Invalid name; names must not begin with punctuation",
        ),
        (plan_of(f"a {WHO}\nb^1 {WHO}\n"), "sqitch.plan:5: Invalid name"),
        (plan_of(f"a {WHO}\nb 2024-13-02T03:04:05Z Ann <a@b>\n"), "sqitch.plan:5: Invalid timestamp"),
        (plan_of(f"HEAD {WHO}\n"), 'sqitch.plan:4: "HEAD" is a reserved name'),
        (plan_of(f"a {WHO}\n@ROOT {WHO}\n"), 'sqitch.plan:5: "@ROOT" is a reserved name'),
        (plan_of(f"{'ab' * 20} {WHO}\n"), "could be confused with a SHA1 ID"),
        (plan_of(f"@v1 {WHO}\n"), 'sqitch.plan:4: Tag "v1" declared without a preceding change'),
        (plan_of(f"a {WHO}\n@v1/x {WHO}\n"), 'sqitch.plan:5: Tag "v1/x" contains illegal character /'),
        (
            plan_of(f"a {WHO}\n@v1 {WHO}\nb {WHO}\n@v1 {WHO}\n"),
            'sqitch.plan:7: Tag "v1" duplicates earlier declaration on line 5',
        ),
        (plan_of(f"a {WHO}\n@v1 [a] {WHO}\n"), "sqitch.plan:5: Tags may not specify dependencies"),
        (
            plan_of(f"a {WHO}\nb {WHO}\na {WHO}\n"),
            'sqitch.plan:6: Change "a" duplicates earlier declaration on line 4',
        ),
        (plan_of(f"a {WHO}\nb [a a] {WHO}\n"), 'sqitch.plan:5: Duplicate dependency "a"'),
        (
            plan_of(f"a {WHO}\nb [a:b:c] {WHO}\n"),
            'sqitch.plan:5: "a:b:c" is not a valid dependency specification',
        ),
        (
            plan_of(f"a [b] {WHO}\nb {WHO}\n"),
            'sqitch.plan:4: Dependency error detected: Change "a" planned 1 change before',
        ),
        (
            plan_of(f"a [nope] {WHO}\n"),
            'sqitch.plan:4: Dependency error detected: Unknown change "nope" required by change "a"',
        ),
        (plan_of(f"a [a] {WHO}\n"), 'Change "a" cannot require itself'),
        (plan_of(f"a {WHO}\nb [a@v9] {WHO}\n"), 'Unknown change "a@v9" required by change "b"'),
    ],
)
def test_bad_plans_name_file_line_and_reason(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "sqitch.plan")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_dependencies_across_tags_and_other_projects_are_accepted() -> None:
    plan = parse_plan(plan_of(f"a {WHO}\n@v1 {WHO}\n\nb [a@v1 @v1 other:x] {WHO}\nc [b] {WHO}\n"))
    assert [change.name for change in plan.changes] == ["a", "b", "c"]


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "sqitch.plan")


def test_canonical_uri_follows_perl_uri() -> None:
    assert canonical_uri("HTTPS://Example.COM:443") == "https://example.com/"
    assert canonical_uri("https://x.org?q=%41") == "https://x.org?q=A"
    assert canonical_uri("https://x.org/a%7eb%2f") == "https://x.org/a~b%2F"
    assert canonical_uri("urn:Foo:Bar") == "urn:foo:Bar"
    assert canonical_uri("ssh://Git@Host:22/x") == "ssh://Git@host/x"


def test_script_files_of_the_toy_project() -> None:
    toy = FIXTURES / "toy"
    project = Project.load(
        toy, env={"SQITCH_SYSTEM_CONFIG": "/nonexistent", "SQITCH_USER_CONFIG": "/nonexistent"}
    )
    plan = load_plan(project.plan_file)
    first, reworked = (c for c in plan.changes if c.name == "functions/greet")
    new = project.scripts_for(reworked)
    old = project.scripts_for(first)
    assert (new.deploy, new.revert, new.verify) == (
        toy / "functions/greet.sql",
        toy / "revert/functions/greet.sql",
        toy / "verify/functions/greet.sql",
    )
    # sqitch's reworked_deploy_dir defaults to <top_dir>/deploy, even with deploy_dir = .
    assert (old.deploy, old.revert, old.verify) == (
        toy / "deploy/functions/greet@v1.0.sql",
        toy / "revert/functions/greet@v1.0.sql",
        toy / "verify/functions/greet@v1.0.sql",
    )
    assert project.verify_on_deploy
    assert project.registry == "sqitch"
    assert project.mode == "all"


def test_rework_suffix_prefers_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "sqitch.conf").write_text(
        "[core]\n\tengine = pg\n\treworked_dir = old\n[deploy]\n\tmode = tag\n"
    )
    project = Project.load(tmp_path, env={"SQITCH_SYSTEM_CONFIG": "/none", "SQITCH_USER_CONFIG": "/none"})
    assert project.scripts("a/b", ["v3", "v2"]).deploy == tmp_path / "old/deploy/a/b@v3.sql"
    (tmp_path / "old/deploy/a").mkdir(parents=True)
    (tmp_path / "old/deploy/a/b@v2.sql").write_text("select 1;\n")
    scripts = project.scripts("a/b", ["v3", "v2"])
    assert (scripts.deploy, scripts.revert) == (
        tmp_path / "old/deploy/a/b@v2.sql",
        tmp_path / "old/revert/a/b@v2.sql",
    )
    assert project.mode == "tag"
