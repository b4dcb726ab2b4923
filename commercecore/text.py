"""Messages for one line: the CLI prints every expected failure as a single line, and the jobs runner logs
one JSON line per event, so server and program messages that span lines are squashed first."""

from __future__ import annotations


def one_line(message: str | BaseException) -> str:
    """Every run of whitespace (newlines included) as one blank; an exception without a message is named by
    its type, so the line still says something."""
    squashed = " ".join(str(message).split())
    if not squashed and isinstance(message, BaseException):
        return type(message).__name__
    return squashed
