"""Database URLs: libpq's `postgresql://...` and sqitch's `db:pg://...` both name a target."""

from __future__ import annotations

import re

from commercecore.deploy.errors import DeployError

_PG_ENGINES = ("pg", "postgres", "postgresql", "pgsql")
# `scheme://user:password@` and `db:pg://user:password@`
_PASSWORD_RE = re.compile(r"\A((?:db:)?[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@")


def libpq_url(url: str) -> str:
    """The libpq form of a target URL; `db:pg://u@h:5432/db` -> `postgresql://u@h:5432/db`."""
    if not url.startswith("db:"):
        return url
    engine, colon, rest = url[3:].partition(":")
    if not colon or engine.lower() not in _PG_ENGINES:
        raise DeployError(f"unsupported target {display_url(url)}: only db:pg: targets are PostgreSQL")
    if rest.startswith("//"):
        return f"postgresql:{rest}"
    # `db:pg:dbname` (no authority): the database on libpq's default host and port
    return f"postgresql:///{rest}"


def display_url(url: str) -> str:
    """The URL without its password, for messages (sqitch's `destination`)."""
    return _PASSWORD_RE.sub(r"\1@", url)
