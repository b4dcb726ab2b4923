"""`commercecore db deploy|revert|verify|status|log`: the deployer on the command line.

Progress goes to stdout, warnings and the single error line to stderr; failures exit with status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from commercecore.cli.common import DurationType, database_url_option, err, fail, out
from commercecore.deploy.engine import Deployer
from commercecore.deploy.errors import DeployError
from commercecore.deploy.locks import RETRIES_ENV, RETRY_DELAY_ENV, TIMEOUT_ENV
from commercecore.deploy.reports import VerifyFailed, VerifyReport

P = ParamSpec("P")
R = TypeVar("R")


class ConsoleReporter:
    """Deployer progress as sqitch prints it (`  + change .. ok`), with colour where it helps."""

    def __init__(self, out: Console, err: Console) -> None:
        self.out = out
        self.err = err

    def info(self, text: str) -> None:
        self.out.print(escape(text))

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/] {escape(text)}")

    def step(self, action: str, name: str, ok: bool) -> None:
        sign = "+" if action == "deploy" else "-"
        verdict = "[green]ok[/]" if ok else "[bold red]not ok[/]"
        self.out.print(f"  {sign} {escape(name)} .. {verdict}")


def _errors_to_exit(func: Callable[P, R]) -> Callable[P, R]:
    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            fail(f"{type(exc).__name__}: {exc}")

    return wrapper


def _database_url(value: str | None) -> str:
    if value:
        return value
    env = os.environ.get("DATABASE_URL")
    if env:
        return env
    # lazily: starting the embedded cluster is only wanted when no database was named
    from commercecore.local import embedded

    try:
        return embedded.admin_url()
    except embedded.EmbeddedError as exc:
        fail(exc)


def _deployer(
    database_url: str | None,
    plan_file: Path | None,
    reporter: ConsoleReporter,
    *,
    registry_lock_timeout: float = 60.0,
    locks: LockOptions | None = None,
    verify: bool | None = None,
    mode: str | None = None,
) -> Deployer:
    project_dir = plan_file.resolve().parent if plan_file is not None else Path.cwd()
    if plan_file is None and not (project_dir / "sqitch.conf").exists():
        # run from elsewhere: fall back on the project this package belongs to
        from commercecore.local import embedded

        project_dir = embedded.project_root()
    locks = locks or LockOptions(None, None, None)
    return Deployer(
        _database_url(database_url),
        project_dir,
        plan_file,
        reporter=reporter,
        registry_lock_timeout=registry_lock_timeout,
        lock_timeout=_seconds(locks.timeout),
        lock_retries=locks.retries,
        lock_retry_delay=_seconds(locks.retry_delay),
        verify=verify,
        mode=mode,
    )


@dataclass(frozen=True)
class LockOptions:
    """--lock-timeout, --lock-retries, --lock-retry-delay as given (None: the environment, else defaults)."""

    timeout: timedelta | None
    retries: int | None
    retry_delay: timedelta | None


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _when(moment: datetime) -> str:
    """sqitch's iso date format: local wall time and offset, to the second."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


_database_url_option = database_url_option(
    "postgresql://... or db:pg://... (default: $DATABASE_URL, else the embedded cluster)."
)
_registry_lock_timeout_option = click.option(
    "--registry-lock-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for another sqitch or commercecore deploying to the database "
    "(sqitch's --lock-timeout).",
)


def _lock_options(func: Callable[P, R]) -> Callable[P, R]:
    """The lock policy of the scripts: how long a statement waits for a lock, how often a change that
    gave up is tried again."""
    for option in reversed(
        (
            click.option(
                "--lock-timeout",
                type=DurationType(),
                help="How long a statement of a script waits for a lock (0: for ever) "
                f"[${TIMEOUT_ENV}, else 5s].",
            ),
            click.option(
                "--lock-retries",
                type=click.IntRange(min=0),
                help=f"Times a change that timed out on a lock is tried again [${RETRIES_ENV}, else 3].",
            ),
            click.option(
                "--lock-retry-delay",
                type=DurationType(),
                help=f"Pause before the first retry, doubling each time [${RETRY_DELAY_ENV}, else 1s].",
            ),
        )
    ):
        func = option(func)
    return func


_plan_file_option = click.option(
    "--plan-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The plan (default: sqitch.plan of the project; its directory is the project directory).",
)


@click.group("db")
def db() -> None:
    """Deploy and revert the SQL change plan (sqitch-compatible registry)."""


@db.command()
@click.option(
    "--to", "to", metavar="CHANGE", help="Deploy through this change, @tag or @HEAD^-style reference."
)
@click.option(
    "--verify/--no-verify",
    "verify",
    default=None,
    help="Run verify scripts after each change [deploy.verify].",
)
@click.option(
    "--mode",
    type=click.Choice(["all", "tag", "change"]),
    default=None,
    help="What a failure reverts: the whole run, back to the last tag, or nothing [deploy.mode, else all].",
)
@_registry_lock_timeout_option
@_lock_options
@_database_url_option
@_plan_file_option
@_errors_to_exit
def deploy(
    to: str | None,
    verify: bool | None,
    mode: str | None,
    registry_lock_timeout: float,
    lock_timeout: timedelta | None,
    lock_retries: int | None,
    lock_retry_delay: timedelta | None,
    database_url: str | None,
    plan_file: Path | None,
) -> None:
    """Deploy pending changes; a failure reverts the run (sqitch's --mode all)."""
    deployer = _deployer(
        database_url,
        plan_file,
        ConsoleReporter(out, err),
        verify=verify,
        mode=mode,
        registry_lock_timeout=registry_lock_timeout,
        locks=LockOptions(lock_timeout, lock_retries, lock_retry_delay),
    )
    deployer.deploy(to)


@db.command()
@click.option("--to", "to", metavar="CHANGE", help="Revert the changes deployed after this one.")
@click.option("-y", "yes", is_flag=True, help="Do not ask for confirmation.")
@_registry_lock_timeout_option
@_lock_options
@_database_url_option
@_plan_file_option
@_errors_to_exit
def revert(
    to: str | None,
    yes: bool,
    registry_lock_timeout: float,
    lock_timeout: timedelta | None,
    lock_retries: int | None,
    lock_retry_delay: timedelta | None,
    database_url: str | None,
    plan_file: Path | None,
) -> None:
    """Revert deployed changes (all of them unless --to)."""
    deployer = _deployer(
        database_url,
        plan_file,
        ConsoleReporter(out, err),
        registry_lock_timeout=registry_lock_timeout,
        locks=LockOptions(lock_timeout, lock_retries, lock_retry_delay),
    )
    no_prompt = yes or bool(deployer.layout.config.get_bool("revert.no_prompt"))
    accept = deployer.layout.config.get_bool("revert.prompt_accept")

    def confirm(question: str) -> bool:
        default = True if accept is None else accept
        if sys.stdin is not None and sys.stdin.isatty():
            return click.confirm(question, default=default)
        # piped answers are fine; no answer at all is not consent (sqitch would take the default)
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if not line:
            raise DeployError(
                "not reverting: no answer on stdin to confirm (use -y to revert without asking)"
            )
        answer = line.strip().lower()
        out.print(f"{escape(question)} {escape(answer)}")
        if answer in ("y", "yes") or (not answer and default):
            return True
        if answer in ("n", "no") or not answer:
            return False
        raise DeployError(f"not reverting: {answer!r} is not y or n")

    deployer.revert(to, confirm=None if no_prompt else confirm)


@db.command()
@_database_url_option
@_plan_file_option
@_errors_to_exit
def verify(database_url: str | None, plan_file: Path | None) -> None:
    """Run the verify script of every deployed change."""
    deployer = _deployer(database_url, plan_file, ConsoleReporter(out, err))
    try:
        report = deployer.verify()
    except VerifyFailed as exc:
        _print_report(out, exc.report)
        raise
    _print_report(out, report)
    if report.results:
        out.print("[green]Verify successful[/]")


def _print_report(out: Console, report: VerifyReport) -> None:
    for result in report.results:
        verdict = "[green]ok[/]" if result.ok else f"[bold red]not ok[/] {escape(result.reason)}"
        out.print(f"  * {escape(result.change)} .. {verdict}")
    if report.pending:
        out.print("Undeployed changes:" if len(report.pending) > 1 else "Undeployed change:")
        for name in report.pending:
            out.print(f"  * {escape(name)}")


@db.command()
@_database_url_option
@_plan_file_option
@_errors_to_exit
def status(database_url: str | None, plan_file: Path | None) -> None:
    """Show the deployed head and the changes not deployed yet."""
    result = _deployer(database_url, plan_file, ConsoleReporter(out, err)).status()
    out.print(f"# On database {escape(result.destination)}")
    head = result.head
    if head is None:
        out.print("# No changes deployed")
    else:
        out.print(f"# Project:  {escape(head.project)}")
        out.print(f"# Change:   {head.id}")
        out.print(f"# Name:     {escape(head.name)}")
        if head.tags:
            label = "Tags:    " if len(head.tags) > 1 else "Tag:     "
            out.print(f"# {label} {escape(', '.join(head.tags))}")
        out.print(f"# Deployed: {_when(head.committed_at)}")
        out.print(f"# By:       {escape(head.committer_name)} <{escape(head.committer_email)}>")
    if not result.pending:
        out.print("Nothing to deploy (up-to-date)")
        return
    out.print("Undeployed changes:" if len(result.pending) > 1 else "Undeployed change:")
    for change in result.pending:
        out.print(f"  * {escape(change.format_name_with_tags)}")


@db.command("log")
@click.option("-n", "--max-count", type=int, default=None, help="Show at most this many events.")
@_database_url_option
@_plan_file_option
@_errors_to_exit
def log_(max_count: int | None, database_url: str | None, plan_file: Path | None) -> None:
    """Show the deployment events, newest first."""
    events = _deployer(database_url, plan_file, ConsoleReporter(out, err)).log(limit=max_count)
    if not events:
        raise DeployError("No events logged")
    colours = {"deploy": "green", "revert": "blue", "fail": "red"}
    for event in events:
        # one line per event, sqitch's `oneline` shape plus when and who
        tags = f" {' '.join(event.tags)}" if event.tags else ""
        out.print(
            f"{_when(event.committed_at)} [{colours.get(event.event, 'white')}]{event.event:<6}[/] "
            f"{escape(event.project)}:{escape(event.change)}{escape(tags)} "
            f"{escape(event.committer_name)} <{escape(event.committer_email)}>"
        )
