"""The product's own plan under the real sqitch: sqitch deploys and verifies what `commercecore db` reads,
and a function changed after the release tag is a `sqitch rework` of its change (docs/operations.md,
"Changing an object after the tag"), deployed by either tool and reverted to the tagged version."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import ROOT
from tests.deploy.support import Toy, requires_sqitch, sqitch_target

pytestmark = [pytest.mark.sqitch, requires_sqitch]

PLAN_FILES = ("sqitch.plan", "sqitch.conf")
PLAN_FOLDERS = ("roles", "schema", "procedures", "views", "revert", "verify")
RELEASE = "@v1.0.0"
REWORKED = "procedures/guards"
OLD_HINT = "Sign in with a staff account."
NEW_HINT = "Sign in with a staff account, then send the request again."


@pytest.fixture
def product(toy: Toy) -> Toy:
    """A writable copy of the product's plan and scripts, run with the toy's environment."""
    shutil.rmtree(toy.dir)
    toy.dir.mkdir()
    for name in PLAN_FILES:
        shutil.copy(ROOT / name, toy.dir / name)
    for folder in PLAN_FOLDERS:
        shutil.copytree(ROOT / folder, toy.dir / folder)
    return toy


def staff_hint(url: str) -> str:
    """The default of core.require_staff's hint, as the database has it now."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select pg_get_function_arguments('core.require_staff(text, text)'::regprocedure)"
        ).fetchone()
    assert row is not None
    return str(row[0])


def after_release(toy: Toy, url: str) -> list[str]:
    """The changes planned after the release tag (new ones and reworks), in plan order."""
    changes = toy.deployer(url).plan.changes
    released = next(n for n, change in enumerate(changes) if RELEASE in [t.format_name for t in change.tags])
    return [change.name for change in changes[released + 1 :]]


def test_sqitch_deploys_and_verifies_the_product_plan(product: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    target = sqitch_target(url)
    product.sqitch("deploy", "--verify", target)

    ours = product.deployer(url)
    state = ours.status()
    assert state.pending == []
    assert state.head is not None
    assert state.head.name == product.deployer(url).plan.changes[-1].name
    assert "procedures/ops/housekeeping" not in after_release(product, url)  # the last change of the release
    assert product.deployer(url).verify().ok


def test_a_function_changed_after_the_tag_is_a_rework(product: Toy, new_db: Callable[[], str]) -> None:
    url = new_db()
    target = sqitch_target(url)
    product.deployer(url).deploy()
    assert OLD_HINT in staff_hint(url)

    product.sqitch("rework", REWORKED, "-n", "Staff are told to send the request again")
    # the tagged version is kept beside the change's scripts, and reverting the rework runs it again
    tagged = product.dir / f"{REWORKED}@{RELEASE[1:]}.sql"
    deploy = product.dir / f"{REWORKED}.sql"
    assert tagged.read_text() == (ROOT / f"{REWORKED}.sql").read_text()
    assert (product.dir / "revert" / f"{REWORKED}.sql").read_text() == tagged.read_text()
    deploy.write_text(deploy.read_text().replace(OLD_HINT, NEW_HINT))

    ours = product.deployer(url)  # reads the plan as the rework left it

    assert [change.name for change in ours.deploy()] == [REWORKED]
    assert NEW_HINT in staff_hint(url)
    assert "Verify successful" in product.sqitch("verify", target).stdout
    assert "Nothing to deploy (up-to-date)" in product.sqitch("status", target).stdout

    # back to the release: every change planned after it is pending again, the rework last
    product.sqitch("revert", "-y", "--to", RELEASE, target)
    assert OLD_HINT in staff_hint(url)
    assert NEW_HINT not in staff_hint(url)
    later = after_release(product, url)
    assert later[-1] == REWORKED
    assert [change.name for change in ours.status().pending] == later
    assert [change.name for change in ours.deploy()] == later
    assert ours.verify().ok
