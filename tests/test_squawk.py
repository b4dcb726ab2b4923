"""squawk, the migration linter, in `make lint` (CI runs `make test`, lint first): it covers every deploy
script, its configuration says why each rule or file it leaves out is left out, and with that configuration
it still catches the locking hazards a new change could bring."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".squawk.toml"
SQUAWK = Path(sys.executable).parent / "squawk"


def squawk(*paths: Path) -> subprocess.CompletedProcess[str]:
    squawk_bin = SQUAWK if SQUAWK.exists() else shutil.which("squawk")
    assert squawk_bin is not None, "squawk-cli is in the dev extra: run make install"
    return subprocess.run(
        [str(squawk_bin), "--config", str(CONFIG), "--reporter", "gcc", *map(str, paths)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def test_make_lint_runs_squawk_over_every_deploy_folder_and_ci_runs_lint() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/squawk --config .squawk.toml" in lint
    assert "DEPLOY_SCRIPTS = $(shell find roles schema procedures views -name '*.sql'" in makefile
    assert re.search(r"^test: lint pytest\b", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_exclusion_says_why() -> None:
    config = tomllib.loads(CONFIG.read_text())
    lines = CONFIG.read_text().splitlines()
    excluded = [*config.get("excluded_rules", []), *config.get("excluded_paths", [])]
    assert excluded
    for entry in excluded:
        [index] = [n for n, line in enumerate(lines) if line.strip() == f'"{entry}",']
        assert lines[index - 1].strip().startswith("#"), f"{entry} is excluded without a reason above it"


def test_the_excluded_paths_are_tagged_scripts() -> None:
    plan = (ROOT / "sqitch.plan").read_text()
    released = plan.split("\n@v1.0.0 ", 1)[0]
    for path in tomllib.loads(CONFIG.read_text()).get("excluded_paths", []):
        change = path.removesuffix(".sql")
        assert re.search(rf"^{re.escape(change)} ", released, re.MULTILINE), f"{path} is not a tagged change"
        assert not re.search(rf"^{re.escape(change)} ", plan.split("\n@v1.0.0 ", 1)[1], re.MULTILINE), (
            f"{path} was reworked after the tag: lint it again"
        )


@pytest.mark.parametrize(
    ("script", "rule"),
    [
        (
            "begin;\ncreate index orders_x_idx on core.orders (status);\ncommit;\n",
            "require-concurrent-index-creation",
        ),
        (
            "alter table core.orders add constraint orders_x_check check (total_minor >= 0);\n",
            "constraint-missing-not-valid",
        ),
        (
            "begin;\nalter table core.orders alter column currency type varchar(3);\ncommit;\n",
            "changing-column-type",
        ),
        (
            "begin;\nalter table core.orders alter column note set not null;\ncommit;\n",
            "adding-not-nullable-field",
        ),
    ],
)
def test_hazards_of_a_new_change_are_caught(tmp_path: Path, script: str, rule: str) -> None:
    path = tmp_path / "schema" / "new_change.sql"
    path.parent.mkdir()
    path.write_text(f"-- Deploy commercecore:schema/new_change to pg\n{script}")
    result = squawk(path)
    assert result.returncode != 0
    assert rule in result.stdout + result.stderr


EXPAND_CONTRACT = {
    "expand": "begin;\nalter table core.orders add column item_count integer;\ncommit;\n",
    "check": (
        "begin;\nalter table core.orders add constraint orders_item_count_not_null"
        " check (item_count is not null) not valid;\ncommit;\n"
    ),
    "validate": "begin;\nalter table core.orders validate constraint orders_item_count_not_null;\ncommit;\n",
    "contract": (
        "begin;\n"
        "-- the validated check orders_item_count_not_null proves it: no scan under the lock\n"
        "-- squawk-ignore adding-not-nullable-field\n"
        "alter table core.orders alter column item_count set not null;\n"
        "-- NOT NULL now says what the check said\n"
        "-- squawk-ignore ban-drop-constraint\n"
        "alter table core.orders drop constraint orders_item_count_not_null;\n"
        "commit;\n"
    ),
    "index": (
        "-- no begin/commit: create index concurrently cannot run inside a transaction block\n"
        "drop index concurrently if exists core.orders_item_count_idx;\n"
        "create index concurrently if not exists orders_item_count_idx on core.orders (item_count);\n"
    ),
}


def test_the_expand_contract_recipe_of_the_docs_passes(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    paths = []
    for step, script in EXPAND_CONTRACT.items():
        for line in script.splitlines():
            if not line.startswith(("begin", "commit", "-- no begin")):
                assert line.strip() in docs, f"{step}: the docs no longer show {line!r}"
        paths.append(tmp_path / f"{step}.sql")
        paths[-1].write_text(script)
    result = squawk(*paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_one_step_version_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "one_step.sql"
    path.write_text(
        "begin;\nalter table core.orders add column item_count integer;\n"
        "alter table core.orders alter column item_count set not null;\n"
        "create index orders_item_count_idx on core.orders (item_count);\ncommit;\n"
    )
    result = squawk(path)
    assert "adding-not-nullable-field" in result.stdout
    assert "require-concurrent-index-creation" in result.stdout
