"""What deploy, revert and verify tell their caller: progress lines, status, verify results."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from commercecore.deploy.errors import DeployError
from commercecore.deploy.model import Change
from commercecore.deploy.registry import DeployedChange
from commercecore.text import one_line

log = logging.getLogger("commercecore.deploy")


class Reporter(Protocol):
    """Where progress goes: the CLI prints it, the default logs it."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def step(self, action: str, name: str, ok: bool) -> None: ...


class LogReporter:
    """Progress to the `commercecore.deploy` logger (the default when nobody prints it)."""

    def info(self, text: str) -> None:
        log.info("%s", text)

    def warn(self, text: str) -> None:
        log.warning("%s", text)

    def step(self, action: str, name: str, ok: bool) -> None:
        log.info("%s %s .. %s", "+" if action == "deploy" else "-", name, "ok" if ok else "not ok")


@dataclass(frozen=True)
class Status:
    """The project's deployed head (None: nothing deployed) and the planned changes after it."""

    project: str
    destination: str
    head: DeployedChange | None
    pending: list[Change]


@dataclass(frozen=True)
class VerifyResult:
    change: str  # name and tags
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class VerifyReport:
    results: list[VerifyResult]
    pending: list[str]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)


class VerifyFailed(DeployError):
    """`verify` found problems; `report` has every change's result."""

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        failures = [f"{result.change}: {result.reason}" for result in report.results if not result.ok]
        super().__init__(one_line("Verify failed: " + "; ".join(failures)))
