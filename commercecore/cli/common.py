"""What every command shares: the consoles, the one-line failure, the database URL option, durations.

Every expected failure prints one line on stderr (`error: ...`) and exits non-zero, never a traceback;
progress and reports go to stdout.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from commercecore.text import one_line

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

# seconds per unit, under the names PostgreSQL's interval input knows; a month and a year count as 30 and
# 365 days, as psycopg converts such intervals
_UNIT_SECONDS: dict[str, float] = {
    **dict.fromkeys(("us", "usec", "usecs", "microsecond", "microseconds"), 1e-6),
    **dict.fromkeys(("ms", "msec", "msecs", "millisecond", "milliseconds"), 1e-3),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
    **dict.fromkeys(("mon", "mons", "month", "months"), 30 * 86400),
    **dict.fromkeys(("y", "yr", "yrs", "year", "years"), 365 * 86400),
}
_NUMBER = r"[+-]?\d+(?:\.\d+)?"
# `2h`, `30 min`, or a clock `1:30` / `01:30:00` (hours:minutes[:seconds])
_TERM = rf"(?P<amount>{_NUMBER})\s*(?P<unit>[a-z]+)|(?P<clock>[+-]?\d+:\d{{1,2}}(?::\d{{1,2}}(?:\.\d+)?)?)"
_TERM_RE = re.compile(_TERM)
_DURATION_RE = re.compile(rf"(?:\s*(?:{_TERM}))+\s*")
DURATION_EXAMPLES = "15m, 90s, 1h30m, 30min, '1 hour', 2d, 900"


def _clock_seconds(clock: str) -> float:
    sign = -1 if clock.startswith("-") else 1
    parts = [float(part) for part in clock.lstrip("+-").split(":")]
    return sign * sum(part * scale for part, scale in zip(parts, (3600, 60, 1), strict=False))


def parse_duration(text: str) -> datetime.timedelta:
    """`15m`, `90s`, `2h`, `1h30m`, `30min`, `1 hour`, `2d`, `01:30:00`, a trailing `ago`, or plain seconds
    (`900`): the forms of PostgreSQL's interval input that a duration needs. ValueError otherwise."""
    value = text.strip().lower()
    if re.fullmatch(_NUMBER, value):
        return datetime.timedelta(seconds=float(value))
    value, ago = re.subn(r"\s+ago\Z", "", value)
    if not _DURATION_RE.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration (e.g. {DURATION_EXAMPLES})")
    seconds = 0.0
    for term in _TERM_RE.finditer(value):
        if term["clock"]:
            seconds += _clock_seconds(term["clock"])
        elif term["unit"] in _UNIT_SECONDS:
            seconds += float(term["amount"]) * _UNIT_SECONDS[term["unit"]]
        else:
            raise ValueError(f"{text!r} is not a duration: unknown unit {term['unit']!r}")
    return datetime.timedelta(seconds=-seconds if ago else seconds)


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
