"""Plain SQL dumps (`pg_dump` without `-F`, and the `.sql` of `db backup --plain`): telling one from an
archive, checking it is a script of one database's contents, and feeding it to psql.

A plain script is restored like an archive (staging database, then swap) but through psql, in one
transaction that stops at the first error. Two things of a script are not run as written: a `\\connect`
or `CREATE DATABASE` (a `pg_dump --create` script) is refused, since it would leave the staging database
for another one; and its `REFRESH MATERIALIZED VIEW` statements are held back and run after the load,
in an ordinary session: the script sets `row_security = off`, under which a view over a FORCE ROW LEVEL
SECURITY table cannot refresh (the same reason the archive restore leaves them out).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from commercecore.ops.target import OpsError
from commercecore.text import one_line

ARCHIVE_MAGIC = b"PGDMP"
_HEADER = b"-- PostgreSQL database dump"
_COPY_RE = re.compile(rb"COPY .+ FROM stdin;\s*\Z")
_END_OF_COPY = b"\\."
_MATVIEW_DATA_RE = re.compile(rb"-- Name: [^;]*; Type: MATERIALIZED VIEW DATA;")
_NAME = rb'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_REFRESH_RE = re.compile(rb"REFRESH MATERIALIZED VIEW (" + _NAME + rb"\." + _NAME + rb");\s*\Z")
# as pg_dump writes them: the meta-command, and the statement in capitals (function bodies of the house
# are lowercase)
_OTHER_DATABASE_RE = re.compile(rb"(?:\\c(?:onnect)?\b|CREATE DATABASE\b)")


class PlainScriptError(OpsError):
    """A plain script was refused or psql failed on it; the message says why, in one line."""


def is_archive(path: Path) -> bool:
    """Whether a file is a pg_dump archive (custom format) rather than a plain script."""
    with path.open("rb") as handle:
        return handle.read(len(ARCHIVE_MAGIC)) == ARCHIVE_MAGIC


class _Feed:
    """The lines of a script as psql gets them; `matviews` collects the views held back for refreshing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.matviews: list[str] = []

    def lines(self, handle: BinaryIO) -> Iterator[bytes]:
        in_copy = False
        refresh_next = False
        for number, line in enumerate(handle, start=1):
            bare = line.rstrip(b"\r\n")
            if in_copy:
                # rows of a COPY are data, whatever they look like
                in_copy = bare != _END_OF_COPY
            elif _COPY_RE.match(bare):
                in_copy = True
            elif _OTHER_DATABASE_RE.match(bare):
                raise PlainScriptError(
                    f"{self.path.name}:{number}: the script creates or connects to a database "
                    "(pg_dump --create): restore a dump of the database's contents (pg_dump without --create)"
                )
            elif _MATVIEW_DATA_RE.match(bare):
                refresh_next = True
            elif refresh_next and (refresh := _REFRESH_RE.match(bare)):
                refresh_next = False
                self.matviews.append(refresh.group(1).decode())
                yield b"-- held back, refreshed after the load: " + line
                continue
            yield line


def scan(path: Path) -> list[str]:
    """Checks that `path` is a plain pg_dump script of one database's contents; returns the materialized
    views it refreshes (names as the script writes them)."""
    with path.open("rb") as handle:
        head = handle.read(4096)
        if _HEADER not in head:
            raise PlainScriptError(
                f"{path.name} is neither a pg_dump archive nor a plain pg_dump script "
                f"(no '{_HEADER.decode()}' header)"
            )
        handle.seek(0)
        feed = _Feed(path)
        for _line in feed.lines(handle):
            pass
    return feed.matviews


def load(psql: Path, conninfo: str, env: Mapping[str, str], path: Path) -> None:
    """Runs the script with psql into the database of `conninfo`, in one transaction that stops at the
    first error (then nothing of it stays)."""
    command = [
        str(psql),
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        "--single-transaction",
        f"--dbname={conninfo}",
        "--file=-",
    ]
    with tempfile.TemporaryFile() as errors, path.open("rb") as handle:
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=dict(env)
            )
        except OSError as exc:
            raise PlainScriptError(f"psql: cannot run {psql}: {exc.strerror}") from None
        assert proc.stdin is not None
        try:
            for line in _Feed(path).lines(handle):
                proc.stdin.write(line)
        except BrokenPipeError:
            pass  # psql stopped at an error and exits: its message says which
        except BaseException:
            proc.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            lines = [line for line in errors.read().decode(errors="replace").splitlines() if line.strip()]
            raise PlainScriptError(f"psql failed (exit {code}): {one_line(' '.join(lines[-3:]))}")
