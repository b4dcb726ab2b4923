"""The server and database the DBA tools work on, and the base of their errors.

Backups, restores, PITR, reports and jobs all take a URL; `Target` turns it into libpq conninfo without the
password, which goes into the environment of client programs instead (a command line shows in `ps`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from commercecore.deploy.dburl import display_url, libpq_url
from commercecore.deploy.errors import DeployError
from commercecore.text import one_line


class OpsError(RuntimeError):
    """A DBA tool refused or failed; the message says why, in one line."""


@dataclass(frozen=True)
class Target:
    """A server and database to connect to: libpq conninfo without the password, which goes in the env."""

    conninfo: str
    password: str | None
    display: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        try:
            params = conninfo_to_dict(libpq_url(url))
        except (psycopg.ProgrammingError, DeployError) as exc:
            raise OpsError(f"not a PostgreSQL URL: {display_url(url)} ({exc})") from None
        password = params.pop("password", None)
        return cls(make_conninfo("", **params), None if password is None else str(password), display_url(url))

    @property
    def dbname(self) -> str:
        return str(conninfo_to_dict(self.conninfo).get("dbname") or "")

    def with_dbname(self, dbname: str) -> Target:
        return Target(
            make_conninfo(self.conninfo, dbname=dbname), self.password, f"{self.display} [{dbname}]"
        )

    def connect(self, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
        extra: dict[str, Any] = {"connect_timeout": 10, "application_name": "commercecore-dba", **kwargs}
        if self.password is not None:
            extra["password"] = self.password
        try:
            return psycopg.connect(self.conninfo, **extra)
        except psycopg.OperationalError as exc:
            raise OpsError(f"cannot connect to {self.display}: {one_line(exc)}") from None

    def conninfo_with_password(self) -> str:
        """For this process's own connections (never for a command line)."""
        if self.password is None:
            return self.conninfo
        return make_conninfo(self.conninfo, password=self.password)

    def env(self) -> dict[str, str]:
        """The environment of a client program: the password never goes on a command line (ps shows it)."""
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        return env
