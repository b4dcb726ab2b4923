"""Every change of the product's plan has its deploy, revert and verify scripts, with the house header."""

from __future__ import annotations

from pathlib import Path

from commercecore.deploy.plan import load_plan
from commercecore.deploy.project import Project

ROOT = Path(__file__).resolve().parent.parent


def scripts() -> list[tuple[str, Path, Path, Path]]:
    project = Project.load(ROOT)
    plan = load_plan(project.plan_file)
    assert plan.project == "commercecore"
    assert plan.changes, "the plan has no changes"
    found = []
    for change in plan.changes:
        files = project.scripts_for(change)
        found.append((change.name, files.deploy, files.revert, files.verify))
    return found


def test_every_change_has_deploy_revert_and_verify() -> None:
    missing = [
        str(path.relative_to(ROOT)) for _name, *paths in scripts() for path in paths if not path.is_file()
    ]
    assert missing == []


def test_scripts_carry_the_sqitch_header() -> None:
    for name, deploy, revert, verify in scripts():
        assert deploy.read_text().splitlines()[0] == f"-- Deploy commercecore:{name} to pg"
        assert revert.read_text().splitlines()[0] == f"-- Revert commercecore:{name} from pg"
        assert verify.read_text().splitlines()[0] == f"-- Verify commercecore:{name} on pg"


def test_no_script_outside_the_plan() -> None:
    """A script that no change names is dead code, or a change someone forgot to add to the plan."""
    planned = {path.resolve() for _name, *paths in scripts() for path in paths}
    on_disk = {
        path.resolve()
        for folder in ("roles", "schema", "procedures", "views", "revert", "verify")
        for path in (ROOT / folder).rglob("*.sql")
    }
    assert sorted(str(p.relative_to(ROOT)) for p in on_disk - planned) == []
