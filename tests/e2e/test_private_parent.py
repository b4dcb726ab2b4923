"""`make run` in a project under a private (0700) directory: it works, and changes the mode and owner of
nothing outside the project."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.stack import free_ports, running


def _modes(*paths: Path) -> dict[Path, tuple[int, int, int]]:
    return {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in paths}


def test_up_under_a_private_parent_changes_no_permission_outside_the_project(tmp_path: Path) -> None:
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    parent.chmod(0o700)
    project = parent / "shop"
    project.mkdir()
    # the directories above belong to pytest, and other test runs on the machine share them
    before = _modes(parent, tmp_path)
    stack = free_ports(project / ".data")
    with running(stack) as health:
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
    assert stack.cluster.status() is None
    assert _modes(parent, tmp_path) == before
    assert oct(parent.stat().st_mode & 0o777) == "0o700"
