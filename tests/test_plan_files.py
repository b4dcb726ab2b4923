"""Every change of the product's plan has its deploy, revert and verify scripts, with the house header."""

from __future__ import annotations

from pathlib import Path

from gateway.deploy.plan import parse_plan

ROOT = Path(__file__).resolve().parent.parent


def test_every_change_has_deploy_revert_and_verify() -> None:
    plan = parse_plan(ROOT / "sqitch.plan")
    assert plan.project == "commercecore"
    missing = [
        str(path.relative_to(ROOT))
        for change in plan.changes
        for path in (change.deploy_file(ROOT), change.revert_file(ROOT), change.verify_file(ROOT))
        if not path.is_file()
    ]
    assert plan.changes, "the plan has no changes"
    assert missing == []


def test_scripts_carry_the_sqitch_header() -> None:
    plan = parse_plan(ROOT / "sqitch.plan")
    for change in plan.changes:
        first = change.deploy_file(ROOT).read_text().splitlines()[0]
        assert first == f"-- Deploy commercecore:{change.name} to pg", change.name
        first = change.revert_file(ROOT).read_text().splitlines()[0]
        assert first == f"-- Revert commercecore:{change.name} from pg", change.name
        first = change.verify_file(ROOT).read_text().splitlines()[0]
        assert first == f"-- Verify commercecore:{change.name} on pg", change.name


def test_no_script_outside_the_plan() -> None:
    """A script that no change names is dead code, or a change someone forgot to add to the plan."""
    plan = parse_plan(ROOT / "sqitch.plan")
    planned = {
        path.resolve()
        for change in plan.changes
        for path in (change.deploy_file(ROOT), change.revert_file(ROOT), change.verify_file(ROOT))
    }
    on_disk = {
        path.resolve()
        for folder in ("roles", "schema", "procedures", "views", "revert", "verify")
        for path in (ROOT / folder).rglob("*.sql")
    }
    assert sorted(str(p.relative_to(ROOT)) for p in on_disk - planned) == []
