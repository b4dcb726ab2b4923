"""Fixtures of the deployer tests: a copy of the toy sqitch project and throwaway databases."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PgServer
from tests.deploy.support import FIXTURES, OUR_EMAIL, OUR_NAME, SQITCH_EMAIL, SQITCH_NAME, Toy


@pytest.fixture
def toy(tmp_path: Path, pg: PgServer) -> Toy:
    project = tmp_path / "toy"
    shutil.copytree(FIXTURES / "toy", project)
    user_config = tmp_path / "sqitch-user.conf"
    # sqitch runs its scripts through psql: the wheel's PG 18 client, whatever psql the machine has
    user_config.write_text(f'[engine "pg"]\n\tclient = {pg.bin("psql")}\n')
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        "SQITCH_SYSTEM_CONFIG": str(tmp_path / "no-system.conf"),
        "SQITCH_USER_CONFIG": str(user_config),
    }
    return Toy(
        dir=project,
        env={**base, "SQITCH_FULLNAME": OUR_NAME, "SQITCH_EMAIL": OUR_EMAIL},
        sqitch_env={**base, "SQITCH_FULLNAME": SQITCH_NAME, "SQITCH_EMAIL": SQITCH_EMAIL},
    )


@pytest.fixture
def new_db(pg: PgServer) -> Iterator[Callable[[], str]]:
    """Creates empty databases on demand (URL returned); drops them after the test."""
    names: list[str] = []

    def create() -> str:
        name = f"dx_{uuid.uuid4().hex[:10]}"
        names.append(name)
        return pg.create_db(name)

    yield create
    for name in names:
        pg.drop_db(name)
