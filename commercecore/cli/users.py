"""`commercecore users create|list|set-role|disable|enable`: the accounts, without SQL by hand.

The rules are the database's (`ops.create_account`, `ops.accounts`, `ops.set_account_role`,
`ops.set_account_disabled`, procedures/ops/accounts); this module reads the password, hashes it as the
gateway does (argon2id, `gateway.auth.passwords`) and calls them on the deploying role's connection
(`--database-url`, else DATABASE_URL, else the embedded cluster), as the other operator commands do. The
password never travels on the command line: a prompt on a terminal, else the first line of stdin.

Bad input (an address, a role, a password the rules refuse, an unknown account) is one line on stderr and
exit 2; a database that cannot be reached or refuses otherwise, exit 1.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import uuid
from typing import Any

import click
import psycopg
from rich.table import Table

from commercecore.cli.common import database_url_option, fail, out
from commercecore.local import embedded
from commercecore.ops.target import OpsError, Target
from gateway.auth.passwords import argon2_hasher, check_password_rules
from gateway.errors import ApiError

BAD_INPUT = 2
ROLES_HELP = "app_admin (staff) or app_readwrite (customer)."
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _target(database_url: str | None) -> Target:
    url = database_url or os.environ.get("DATABASE_URL")
    try:
        if not url:
            return Target.from_url(embedded.admin_url())
        embedded.check_server_version(Target.from_url(url).conninfo_with_password())
    except embedded.EmbeddedError as exc:
        fail(exc)
    except OpsError as exc:
        fail(exc, BAD_INPUT)
    return Target.from_url(url)


def call(database_url: str | None, command: str, query: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Runs one ops function in a transaction whose request id names the command (audit.log shows it)."""
    target = _target(database_url)
    try:
        with target.connect(application_name="commercecore-users") as conn, conn.transaction():
            conn.execute(
                "select pg_catalog.set_config('request.id', %s, true)",
                [f"cli-users-{command}-{uuid.uuid4().hex[:12]}"],
            )
            return conn.execute(query, params).fetchall()
    except OpsError as exc:
        fail(exc)
    except psycopg.Error as exc:
        sqlstate = exc.sqlstate or ""
        if sqlstate.startswith("PT4") or sqlstate.startswith("22"):
            fail(exc.diag.message_primary or str(exc), BAD_INPUT)
        fail(f"PostgreSQL: {exc}")


def required(value: str | None, option: str) -> str:
    if value is None or not value.strip():
        fail(f"{option} is required", BAD_INPUT)
    return value


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def read_password() -> str:
    """The new password: asked twice on a terminal, else the first line of stdin (a pipe or a file)."""
    if stdin_is_terminal():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            fail("the two passwords differ", BAD_INPUT)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        return check_password_rules(password)
    except ApiError as exc:
        fail(exc.message, BAD_INPUT)


def show_account(account: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        click.echo(json.dumps(account, indent=2))
        return
    state = "disabled" if account.get("disabled_at") else "active"
    line = f"{what}: {account['email']} (id {account['id']}), {account['role']}, {state}"
    revoked = account.get("sessions_revoked")
    if revoked:
        line += f"; {revoked} session{'s' if revoked != 1 else ''} revoked"
    click.echo(line)


@click.group()
def users() -> None:
    """Accounts: the first staff account and every one after it, roles, disabling."""


@users.command("create")
@click.option("--email", help="The account's email address (it signs in with it).")
@click.option("--role", help=ROLES_HELP)
@click.option("--full-name", default="", help="The name shown for the account.")
@database_url_option()
@json_option
def create_command(
    email: str | None, role: str | None, full_name: str, database_url: str | None, as_json: bool
) -> None:
    """Create an account; its password is asked for (or read from the first line of stdin)."""
    email = required(email, "--email")
    role = required(role, "--role")
    password_hash = argon2_hasher().hash(read_password())
    [(account,)] = call(
        database_url,
        "create",
        "select ops.create_account(%s, %s, %s, %s)",
        [email, role, password_hash, full_name],
    )
    show_account(account, as_json, "created")


@users.command("list")
@click.option("--role", help=f"Only the accounts of this role: {ROLES_HELP}")
@database_url_option()
@json_option
def list_command(role: str | None, database_url: str | None, as_json: bool) -> None:
    """List the accounts, oldest first."""
    rows = call(
        database_url,
        "list",
        "select id, email, full_name, role, created_at, disabled_at, has_password, last_session_at"
        " from ops.accounts(%s)",
        [role],
    )
    names = (
        "id",
        "email",
        "full_name",
        "role",
        "created_at",
        "disabled_at",
        "has_password",
        "last_session_at",
    )
    accounts = [dict(zip(names, row, strict=True)) for row in rows]
    if as_json:
        click.echo(json.dumps(accounts, indent=2, default=str))
        return
    table = Table("id", "email", "name", "role", "state", "created", "last session")
    for a in accounts:
        state = "disabled" if a["disabled_at"] else ("active" if a["has_password"] else "no password")
        last = a["last_session_at"]
        table.add_row(
            str(a["id"]),
            a["email"],
            a["full_name"],
            a["role"],
            state,
            f"{a['created_at']:%Y-%m-%d %H:%M}",
            f"{last:%Y-%m-%d %H:%M}" if last else "-",
        )
    out.print(table)
    out.print(f"{len(accounts)} account{'s' if len(accounts) != 1 else ''}")


@users.command("set-role")
@click.option("--email", help="The account's email address.")
@click.option("--role", help=ROLES_HELP)
@database_url_option()
@json_option
def set_role_command(email: str | None, role: str | None, database_url: str | None, as_json: bool) -> None:
    """Give an account another role; its sessions are revoked when the role changes."""
    [(account,)] = call(
        database_url,
        "set-role",
        "select ops.set_account_role(%s, %s)",
        [required(email, "--email"), required(role, "--role")],
    )
    show_account(account, as_json, "role set")


def _set_disabled(email: str | None, disabled: bool, database_url: str | None, as_json: bool) -> None:
    command = "disable" if disabled else "enable"
    [(account,)] = call(
        database_url,
        command,
        "select ops.set_account_disabled(%s, %s)",
        [required(email, "--email"), disabled],
    )
    show_account(account, as_json, f"{command}d")


@users.command("disable")
@click.option("--email", help="The account's email address.")
@database_url_option()
@json_option
def disable_command(email: str | None, database_url: str | None, as_json: bool) -> None:
    """Disable an account: it signs in no more, and its sessions are revoked."""
    _set_disabled(email, True, database_url, as_json)


@users.command("enable")
@click.option("--email", help="The account's email address.")
@database_url_option()
@json_option
def enable_command(email: str | None, database_url: str | None, as_json: bool) -> None:
    """Enable a disabled account again (with its password as it was)."""
    _set_disabled(email, False, database_url, as_json)
