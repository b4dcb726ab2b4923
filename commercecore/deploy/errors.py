"""Exceptions of the deployer. Every message is one line: the CLI prints it as is."""

from __future__ import annotations

from pathlib import Path

from commercecore.text import one_line


def display_path(path: Path | str, root: Path | None = None) -> str:
    """A path as a DBA would name it: relative to the project directory `root` (where sqitch runs)
    or else to the working directory, when below it; absolute otherwise."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return str(candidate)
    for base in (root, Path.cwd()):
        if base is not None and candidate.is_relative_to(base.absolute()):
            return str(candidate.relative_to(base.absolute()))
    return str(candidate)


class DeployError(Exception):
    """Any failure of deploy, revert, verify, status or log; the message says what and where."""


class PlanError(DeployError):
    """The plan file cannot be read or is malformed: `sqitch.plan:7: Missing timestamp`."""

    def __init__(
        self, file: Path | str, reason: str, line: int | None = None, root: Path | None = None
    ) -> None:
        self.file = Path(file)
        self.line = line
        self.reason = reason
        shown = display_path(file, root)
        where = shown if line is None else f"{shown}:{line}"
        super().__init__(f"{where}: {one_line(reason)}")


class ScriptError(DeployError):
    """A deploy, revert or verify script failed: `schema/orders.sql:12: relation "x" does not exist`."""

    def __init__(
        self,
        file: Path,
        reason: str,
        line: int | None = None,
        sqlstate: str | None = None,
        root: Path | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        self.sqlstate = sqlstate
        shown = display_path(file, root)
        where = shown if line is None else f"{shown}:{line}"
        super().__init__(f"{where}: {one_line(reason)}")
