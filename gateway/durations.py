"""Durations as people write them in settings and options: the forms of PostgreSQL's interval input that a
duration needs. The gateway reads its settings with it (ORDER_MAX_UNPAID_AGE) and the CLI its options, so a
value means the same everywhere."""

from __future__ import annotations

import datetime
import re

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
