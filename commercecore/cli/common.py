"""What every command shares: the consoles, the one-line failure, the database URL option, durations
(`gateway.durations`, as the gateway reads its settings).

Every expected failure prints one line on stderr (`error: ...`) and exits non-zero, never a traceback;
progress and reports go to stdout.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from commercecore.text import one_line
from gateway.durations import parse_duration as parse_duration  # the CLI reads durations as the gateway does

F = TypeVar("F", bound=Callable[..., object])

# soft wrap: long names, URLs and e-mail addresses stay on their line, whatever the terminal width
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str | BaseException, code: int = 1) -> NoReturn:
    """One line on stderr and exit `code`: the CLI never shows a traceback for an expected failure."""
    err.print(f"[bold red]error:[/] {escape(one_line(message))}")
    sys.exit(code)


DATABASE_URL_HELP = "postgresql://... (default: $DATABASE_URL, else the embedded cluster)."


def database_url_option(help_text: str = DATABASE_URL_HELP) -> Callable[[F], F]:
    """`--database-url URL`, passed as `database_url`; `--db-url`, the older spelling, still works."""
    return click.option("--database-url", "--db-url", "database_url", metavar="URL", help=help_text)


# -- durations -------------------------------------------------------------------------------------


class DurationType(click.ParamType[datetime.timedelta]):
    """A click parameter of `parse_duration`'s forms; negative durations are refused."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime.timedelta:
        if isinstance(value, datetime.timedelta):
            return value
        try:
            duration = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if duration < datetime.timedelta(0):
            self.fail(f"{value!r} is negative", param, ctx)
        return duration
