"""The one place that opens a request's context in the database: role, claims, request id, timeouts.

SET ROLE does not load a role's own settings (ALTER ROLE ... SET applies at login only), so the
per-role statement_timeout is read from the catalog once and applied per transaction, as PostgREST does.

A request is one transaction, sent in pipeline mode: `BEGIN [READ ONLY]`, the context statement, the
request's statements, the read of `response.status` / `response.headers`, `COMMIT`: one round trip. A
signed-in request checks its session (`auth.session_active`) as the authenticator first, in the same
transaction, and waits for the answer before anything runs under the request role: two round trips.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Buffer, Loader
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

# The roles a request may run as; app_payments is selected by the gateway itself, never by a JWT claim.
REQUEST_ROLES = frozenset({"app_readonly", "app_readwrite", "app_admin", "app_payments"})

# Role settings that make sense per transaction; anything else set on a role is left to login time.
PER_TRANSACTION_SETTINGS = frozenset(
    {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "work_mem"}
)

ROLE_SETTINGS_QUERY = """
select r.rolname, c.setting
from pg_catalog.pg_db_role_setting as s
join pg_catalog.pg_roles as r on r.oid = s.setrole
cross join lateral unnest(s.setconfig) as c (setting)
where s.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
order by s.setdatabase  -- database-specific settings come last and win
"""

SESSION_CHECK = "select auth.session_active(%s::uuid, %s::bigint)"
RESPONSE_GUCS = "select current_setting('response.status', true), current_setting('response.headers', true)"
_PARAMETER_CONTEXT = re.compile(r"portal parameter \$(\d+)")


def parse_role_settings(rows: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Rows of ROLE_SETTINGS_QUERY -> {role: {setting: value}} for the per-transaction settings."""
    settings: dict[str, dict[str, str]] = {}
    for role, setting in rows:
        name, _, value = setting.partition("=")
        if name in PER_TRANSACTION_SETTINGS:
            settings.setdefault(role, {})[name] = value
    return settings


def request_context(
    role: str,
    claims: Mapping[str, Any] | None,
    role_settings: Mapping[str, Mapping[str, str]],
    *,
    request_id: str = "",
    method: str = "",
    path: str = "",
) -> tuple[sql.Composed, list[str]]:
    """One statement that sets everything a request's transaction needs (values are parameters)."""
    if role not in REQUEST_ROLES:
        raise ValueError(f"{role!r} is not a request role")
    pairs: list[tuple[str, str]] = [
        ("role", role),
        ("request.jwt.claims", json.dumps(dict(claims or {}), separators=(",", ":"))),
        ("request.id", request_id),
        ("request.method", method),
        ("request.path", path),
    ]
    pairs.extend(sorted(role_settings.get(role, {}).items()))
    calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in pairs)
    params = [item for pair in pairs for item in pair]
    return sql.SQL("select {}").format(calls), params


def service_context(
    *, request_id: str = "", method: str = "", path: str = ""
) -> tuple[sql.Composed, list[str]]:
    """The context of the gateway's own calls (the auth functions): request GUCs, no role switch."""
    pairs = [("request.id", request_id), ("request.method", method), ("request.path", path)]
    calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in pairs)
    return sql.SQL("select {}").format(calls), [item for pair in pairs for item in pair]


class RawText(Loader):
    """Loads text as the bytes PostgreSQL sent: JSON built by the database goes out untouched."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


@dataclass(frozen=True)
class Statement:
    query: sql.Composable | str
    params: Sequence[Any] = ()
    # for each parameter, the argument or column it carries (to name it in a type error)
    fields: Sequence[str] = ()
    raw_text: bool = False


@dataclass
class Result:
    """The rows of each statement, and the response GUCs the functions set."""

    rows: list[list[tuple[Any, ...]]] = field(default_factory=list)
    status: str | None = None
    headers: str | None = None


class SessionInactive(Exception):
    """The JWT's session was revoked or has expired in the database."""


def failed_parameter(exc: psycopg.Error, fields: Sequence[str]) -> str | None:
    """The field whose parameter PostgreSQL could not parse (`unnamed portal parameter $2 = ...`)."""
    context = exc.diag.context or ""
    match = _PARAMETER_CONTEXT.search(context)
    if not match:
        return None
    index = int(match.group(1)) - 1
    return fields[index] if 0 <= index < len(fields) else None


@dataclass(frozen=True)
class Identity:
    """Who a request runs as: the role, the claims, and the session to check (None: anonymous)."""

    role: str
    claims: Mapping[str, Any]
    jti: str | None = None
    user_id: int | None = None
    via: str = "anonymous"  # anonymous | bearer | cookie

    @property
    def authenticated(self) -> bool:
        return self.jti is not None


ANONYMOUS = Identity(role="app_readonly", claims={"role": "app_readonly"})


class StatementError(Exception):
    """A database error of one statement, with the statement (to name the failed parameter)."""

    def __init__(self, error: psycopg.Error, statement: Statement | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.statement = statement


async def run(
    pool: AsyncConnectionPool[Any],
    identity: Identity | None,
    statements: Sequence[Statement],
    *,
    role_settings: Mapping[str, Mapping[str, str]],
    read_only: bool,
    request_id: str,
    method: str,
    path: str,
    timeout: float,  # noqa: ASYNC109 - the pool's wait for a connection, not a deadline for the call
    as_service: bool = False,
) -> Result:
    """Runs statements in one transaction under the identity's role (None: as the authenticator).

    With `as_service` the statements run as the authenticator (the auth functions) after the identity's
    session check.

    Raises StatementError (a database error, with the statement that failed), SessionInactive,
    psycopg_pool.PoolTimeout and psycopg.OperationalError (connection lost).
    """
    async with pool.connection(timeout=timeout) as conn:
        error: psycopg.Error | None = None
        cursors: list[psycopg.AsyncCursor[Any]] = []
        gucs: psycopg.AsyncCursor[Any] | None = None
        session_ok = True
        try:
            async with conn.pipeline() as pipeline:
                try:
                    await conn.execute(
                        "begin isolation level read committed" + (" read only" if read_only else "")
                    )
                    if identity is None or as_service:
                        query, params = service_context(request_id=request_id, method=method, path=path)
                    else:
                        query, params = request_context(
                            identity.role,
                            identity.claims,
                            role_settings,
                            request_id=request_id,
                            method=method,
                            path=path,
                        )
                    if identity is not None and identity.jti is not None:
                        # as the authenticator, before the role switch; nothing runs as the user until
                        # the database said the session is active
                        check = await conn.execute(SESSION_CHECK, [identity.jti, identity.user_id])
                        await pipeline.sync()
                        row = await check.fetchone()
                        session_ok = bool(row and row[0] is True)
                    if session_ok:
                        await conn.execute(query, params)
                        for statement in statements:
                            cursor = conn.cursor()
                            if statement.raw_text:
                                cursor.adapters.register_loader("text", RawText)
                            await cursor.execute(statement.query, list(statement.params))
                            cursors.append(cursor)
                        gucs = await conn.execute(RESPONSE_GUCS)
                        await conn.execute("commit")
                        await pipeline.sync()
                except psycopg.Error as exc:
                    error = exc
                    # drain the aborted pipeline here, so that leaving the block does not log about it
                    with contextlib.suppress(psycopg.Error):
                        await pipeline.sync()
        finally:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("rollback")
        if error is not None:
            if isinstance(error, psycopg.OperationalError) and conn.broken:
                raise error
            # in pipeline mode an error can surface while a later statement is queued; the first
            # statement holds every value of the request, so a value PostgreSQL cannot parse fails there
            raise StatementError(error, statements[0] if statements else None)
        if not session_ok:
            raise SessionInactive()
        result = Result(rows=[await cursor.fetchall() for cursor in cursors])
        if gucs is not None:
            guc_row = await gucs.fetchone()
            if guc_row is not None:
                result.status, result.headers = guc_row
        return result
