"""The one place that opens a request's context in the database: role, claims, request id, timeouts.

SET ROLE does not load a role's own settings (ALTER ROLE ... SET applies at login only), so the
per-role statement_timeout is read from the catalog once and applied per transaction, as PostgREST does.
The shop's settings from the gateway's environment (the limits on unpaid orders, `commercecore.*`) are
applied the same way, in the same statement, in read-write transactions.

A request is one transaction, sent in pipeline mode: `BEGIN [READ ONLY]`, the context statement, the
request's statements, the read of `response.status` / `response.headers`, `COMMIT` and a sync go out in
one write, and the results come back in one read: one round trip, with libpq driven directly (no cursor
per statement). A signed-in request checks its session (`auth.session_active`: this user's, issued with the
token's role, neither revoked nor expired) as the authenticator first, in the same transaction, and waits
for the answer before anything runs under the request role: two round trips.
"""

from __future__ import annotations

import functools
import json
import re
import select
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
from psycopg import pq, sql
from psycopg.abc import PQGen
from psycopg.adapt import Buffer, Loader, PyFormat, Transformer
from psycopg.waiting import Ready, Wait
from psycopg_pool import AsyncConnectionPool

from gateway.caches import BoundedCache

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

SESSION_CHECK = "select auth.session_active(%s::uuid, %s::bigint, %s::text)"
RESPONSE_GUCS = "select current_setting('response.status', true), current_setting('response.headers', true)"
_SESSION_CHECK = b"select auth.session_active($1::uuid, $2::bigint, $3::text)"
# after COMMIT, in the same batch: at least the end of the commit record (the insert position, not the
# written one, which lags it under synchronous_commit = off)
_COMMIT_LSN = b"select pg_catalog.pg_current_wal_insert_lsn()::text"
_RESPONSE_GUCS = RESPONSE_GUCS.encode()
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
    shop_settings: Sequence[tuple[str, str]] = (),
) -> tuple[sql.Composed, list[str]]:
    """The statement that sets a request's context (values are parameters), for a transaction whose
    statements are sent one by one: the settings `run` sets for a RequestContext, the shop's included."""
    identity = Identity(role=role, claims=dict(claims or {}))
    return context_statement(
        RequestContext(identity, False, request_id, method, path, role_settings, shop_settings)
    )


def service_context(
    *, request_id: str = "", method: str = "", path: str = ""
) -> tuple[sql.Composed, list[str]]:
    """The context of the gateway's own calls (the auth functions): request GUCs, no role switch."""
    return context_statement(RequestContext(None, False, request_id, method, path))


def context_statement(context: RequestContext) -> tuple[sql.Composed, list[str]]:
    """`select set_config(%s, %s, true), ...` for a context's settings, with them as the parameters."""
    params = context.settings()
    calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in range(len(params) // 2))
    return sql.SQL("select {}").format(calls), params


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
    # its last two columns are current_setting('response.status') and ('response.headers'), read after
    # the call (as PostgREST does): the transaction needs no statement of its own to read them
    response: bool = False
    # the statement as sent, per client encoding (a statement reused for the same URL is dumped once)
    dumped: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Result:
    """The rows of each statement, and the response GUCs the functions set."""

    rows: list[list[tuple[Any, ...]]] = field(default_factory=list)
    status: str | None = None
    headers: str | None = None
    # the primary's WAL insert position read right after COMMIT, when asked for (`run`'s commit_lsn): a
    # replica that has replayed up to it shows the transaction
    lsn: str | None = None


class SessionInactive(Exception):
    """The JWT's session was revoked or has expired in the database, or the token's role is not the one
    the session was issued with."""


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

    @functools.cached_property
    def claims_json(self) -> str:
        """The claims as `request.jwt.claims` holds them (compact JSON)."""
        return json.dumps(dict(self.claims), separators=(",", ":"))


ANONYMOUS = Identity(role="app_readonly", claims={"role": "app_readonly"})


@dataclass(frozen=True)
class RequestContext:
    """What a transaction runs for, as its context statement sets it in the database: who (None: the
    authenticator itself), whether it may write, the request it serves, the request roles'
    per-transaction settings and the shop's settings (a read-write transaction's only: reads never place
    or change an order). `as_service`: the statements run as the authenticator after the identity's
    session check (the auth functions), with the request's own settings only."""

    identity: Identity | None
    read_only: bool
    request_id: str = ""
    method: str = ""
    path: str = ""
    role_settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    shop_settings: Sequence[tuple[str, str]] = ()
    as_service: bool = False

    def settings(self) -> list[str]:
        """The (name, value) pairs of the context statement, one after the other."""
        request = ["request.id", self.request_id, "request.method", self.method, "request.path", self.path]
        identity = self.identity
        if identity is None or self.as_service:
            return request
        role = identity.role
        if role not in REQUEST_ROLES:
            raise ValueError(f"{role!r} is not a request role")
        params = ["role", role, "request.jwt.claims", identity.claims_json, *request]
        for name, value in sorted(self.role_settings.get(role, {}).items()):
            params.append(name)
            params.append(value)
        if not self.read_only:
            for name, value in self.shop_settings:
                params.append(name)
                params.append(value)
        return params


class StatementError(Exception):
    """A database error of one statement, with the statement (to name the failed parameter)."""

    def __init__(self, error: psycopg.Error, statement: Statement | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.statement = statement


# -- the exchange: a whole transaction in one write, its results in one read ------------------------------

_BEGIN_READ_ONLY = b"begin isolation level read committed read only"
_BEGIN_READ_WRITE = b"begin isolation level read committed"
_COMMIT = b"commit"
_PLACEHOLDER = re.compile(r"%(.)", re.DOTALL)
# the statement texts converted lately, and the largest text a connection prepares (see configure_caches)
_CONVERTED: BoundedCache[tuple[str, str], bytes] = BoundedCache(4 * 1024 * 1024, 4096)
_PREPARE_MAX_TEXT = 4096
_CONTEXT_SQL: dict[int, bytes] = {}
_TEXT_OIDS = frozenset({25, 114, 1043, 3802})  # text, json, varchar, jsonb: as the bytes PostgreSQL sent
_INT_OIDS = frozenset({20, 21, 23})  # int8, int2, int4

_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC


def to_postgres(query: str, encoding: str = "utf-8") -> bytes:
    """`%s` placeholders -> `$1, $2, ...` (and `%%` -> `%`), as psycopg does; cached per query text."""
    converted = _CONVERTED.get((query, encoding))
    if converted is not None:
        return converted
    counter = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group(1) == "%":
            return "%"
        if match.group(1) != "s":
            raise psycopg.ProgrammingError(f"only '%s' and '%%' placeholders are allowed: {query[:200]!r}")
        counter += 1
        return f"${counter}"

    converted = _PLACEHOLDER.sub(replace, query).encode(encoding)
    _CONVERTED.put((query, encoding), converted, len(query) + len(converted))
    return converted


def configure_caches(max_bytes: int, max_entry: int) -> None:
    """The process's statement caches: at most `max_bytes` of converted texts all told, and no text over
    `max_entry` bytes kept or prepared on a connection (a one-off large statement runs unnamed)."""
    global _CONVERTED, _PREPARE_MAX_TEXT
    if (_CONVERTED.max_bytes, _PREPARE_MAX_TEXT) != (max_bytes, max_entry):
        _CONVERTED = BoundedCache(max_bytes, max_entry)
        _PREPARE_MAX_TEXT = max_entry


def _context_sql(pairs: int) -> bytes:
    """`select set_config($1, $2, true), ...` for a number of (name, value) pairs."""
    cached = _CONTEXT_SQL.get(pairs)
    if cached is None:
        calls = ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(pairs))
        cached = _CONTEXT_SQL[pairs] = f"select {calls}".encode()
    return cached


@dataclass
class _Command:
    """One statement of the batch: its text ($n placeholders) and its dumped parameters."""

    query: bytes
    params: Sequence[Buffer | None] | None = None
    types: Sequence[int] | None = None
    formats: Sequence[pq.Format] | None = None


def _command(query: bytes, params: Sequence[str] | None = None, encoding: str = "utf-8") -> _Command:
    """A command whose parameters are text (sent as `unknown`, typed by the statement)."""
    if not params:
        return _Command(query)
    dumped: list[Buffer | None] = []
    for value in params:
        if "\x00" in value:
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        dumped.append(value.encode(encoding))
    return _Command(query, dumped)


def _statement_command(statement: Statement, conn: psycopg.AsyncConnection[Any], encoding: str) -> _Command:
    dumped: _Command | None = statement.dumped.get(encoding)
    if dumped is None:
        dumped = statement.dumped[encoding] = _dump(statement, conn, encoding)
    return dumped


def _dump(statement: Statement, conn: psycopg.AsyncConnection[Any], encoding: str) -> _Command:
    query = statement.query
    text = query if isinstance(query, str) else query.as_string(conn)
    command = to_postgres(text, encoding)
    if not statement.params:
        return _Command(command)
    # psycopg's own adaptation (types, binary formats, NUL checks), as a cursor would do it
    transformer = Transformer(conn)
    params = transformer.dump_sequence(statement.params, [PyFormat.AUTO] * len(statement.params))
    return _Command(command, params, transformer.types, transformer.formats)


class PreparedStatements:
    """The statements a connection has prepared (named `cc_<n>`), keyed by text and parameter types.

    A statement counts as prepared only once the server answered its Parse: in pipeline mode a Parse queued
    after a failed statement is skipped, and the next request must prepare it again. (A successful Parse
    survives the transaction's rollback: prepared statements are not transactional.) Past `limit` distinct
    statements the connection deallocates them all and starts again; a text longer than the largest one
    kept (configure_caches) is never prepared, so the names hold at most `limit` small texts.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.counter = 0
        self.deallocate = False

    def new_name(self) -> bytes:
        self.counter += 1
        return b"cc_%d" % self.counter

    def add(self, key: tuple[bytes, tuple[int, ...]], name: bytes) -> None:
        if len(self.names) >= self.limit:
            self.clear()
            self.deallocate = True
        self.names[key] = name

    def clear(self) -> None:
        self.names.clear()


_PREPARED: weakref.WeakKeyDictionary[Any, PreparedStatements] = weakref.WeakKeyDictionary()


def prepared_statements(conn: psycopg.AsyncConnection[Any]) -> PreparedStatements:
    """The prepared statements of a connection (they live as long as its session)."""
    found = _PREPARED.get(conn.pgconn)
    if found is None:
        found = _PREPARED[conn.pgconn] = PreparedStatements()
    return found


def _exchange(pgconn: pq.abc.PGconn, expected: int) -> PQGen[list[pq.abc.PGresult | None]]:
    """Flushes the queued commands and collects one result per command, up to the pipeline sync."""
    while pgconn.flush() != 0:
        ready = yield Wait.RW
        if ready & Ready.R:
            pgconn.consume_input()
    results: list[pq.abc.PGresult | None] = []
    current: pq.abc.PGresult | None = None
    while True:
        while pgconn.is_busy():
            ready = yield Wait.R
            if ready:
                pgconn.consume_input()
        while notify := pgconn.notifies():
            if pgconn.notify_handler:
                pgconn.notify_handler(notify)
        result = pgconn.get_result()
        if result is None:
            results.append(current)
            current = None
        elif result.status == _PIPELINE_SYNC:
            if len(results) != expected:
                raise psycopg.InternalError(f"{len(results)} results for {expected} commands")
            return results
        else:
            current = result


async def _send(
    conn: psycopg.AsyncConnection[Any], commands: Sequence[_Command], prepare: bool
) -> list[pq.abc.PGresult | None]:
    """The commands and a sync in pipeline mode: one write, then the results (one per command).

    With `prepare`, each command runs as a named prepared statement, prepared (Parse) in the same batch
    the first time the connection sees its text: the server plans a statement once per connection, not
    once per request (planning is most of the work of a small read).
    """
    pgconn = conn.pgconn
    cache = prepared_statements(conn) if prepare else None
    # what each result answers: the index of a command, the (key, name) of a Parse, or None
    answers: list[int | tuple[tuple[bytes, tuple[int, ...]], bytes] | None] = []
    pgconn.enter_pipeline_mode()
    if cache is not None and cache.deallocate:
        pgconn.send_query_params(b"deallocate all", None)
        answers.append(None)
        cache.deallocate = False
    for index, command in enumerate(commands):
        if cache is None or len(command.query) > _PREPARE_MAX_TEXT:
            pgconn.send_query_params(command.query, command.params, command.types, command.formats)
        else:
            key = (command.query, tuple(command.types or ()))
            name = cache.names.get(key)
            if name is None:
                name = cache.new_name()
                pgconn.send_prepare(name, command.query, command.types)
                answers.append((key, name))
            pgconn.send_query_prepared(name, command.params, command.formats)
        answers.append(index)
    pgconn.pipeline_sync()
    received = await conn.wait(_exchange(pgconn, len(answers)))
    pgconn.exit_pipeline_mode()
    results: list[pq.abc.PGresult | None] = [None] * len(commands)
    failed_parse: pq.abc.PGresult | None = None
    for answer, result in zip(answers, received, strict=True):
        if isinstance(answer, int):
            # a command whose Parse failed was skipped: the Parse's error is its error
            results[answer] = failed_parse or result
            failed_parse = None
        elif answer is not None and result is not None and cache is not None:
            if result.status == _COMMAND_OK:
                cache.add(*answer)
            elif result.status == _FATAL_ERROR:
                failed_parse = result
    return results


def _first_error(results: Sequence[pq.abc.PGresult | None], trailing: int = 0) -> int | None:
    """The index of the first failed result, leaving out the last `trailing` ones."""
    for index, result in enumerate(results[: len(results) - trailing]):
        if result is not None and result.status == _FATAL_ERROR:
            return index
    return None


def _rows(
    result: pq.abc.PGresult | None, raw_text: bool, conn: psycopg.AsyncConnection[Any]
) -> list[tuple[Any, ...]]:
    if result is None or result.ntuples == 0:
        return []
    if raw_text:
        oids = [result.ftype(column) for column in range(result.nfields)]
        if all(oid in _TEXT_OIDS or oid in _INT_OIDS for oid in oids):
            rows: list[tuple[Any, ...]] = []
            for row in range(result.ntuples):
                values: list[Any] = []
                for column, oid in enumerate(oids):
                    value = result.get_value(row, column)
                    if value is None:
                        values.append(None)
                    else:
                        values.append(bytes(value) if oid in _TEXT_OIDS else int(bytes(value)))
                rows.append(tuple(values))
            return rows
    transformer = Transformer(conn)
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)


def _session_check(identity: Identity, encoding: str) -> _Command | None:
    """The session check of a signed-in identity (None for anonymous): auth.session_active says whether
    the session is this user's, issued with the token's role, neither revoked nor expired."""
    if identity.jti is None:
        return None
    return _command(_SESSION_CHECK, [identity.jti, str(identity.user_id), identity.role], encoding)


async def _begin_checked(
    conn: psycopg.AsyncConnection[Any], begin: _Command, check: _Command, prepare: bool
) -> list[pq.abc.PGresult | None]:
    """BEGIN and the session check in one batch, as the authenticator, before the role switch: nothing runs
    as the user until the database said the session is active. Rolls back and raises SessionInactive when
    it is not; else the two results (an error among them is the caller's to report)."""
    results = await _send(conn, [begin, check], prepare)
    if _first_error(results) is None:
        answer = results[1]
        if answer is None or answer.ntuples != 1 or answer.get_value(0, 0) != b"t":
            await conn.execute("rollback")
            raise SessionInactive()
    return results


async def begin(
    conn: psycopg.AsyncConnection[Any],
    session: Identity | None,
    context: tuple[sql.Composed, Sequence[Any]],
) -> None:
    """Opens a read-write transaction whose statements the caller then sends one by one (the Stripe
    paths, which talk to Stripe between statements), the way `run` opens a request's: BEGIN and the
    session check of a signed-in `session` first, then `context` (`request_context`). Raises
    SessionInactive (rolled back), or the database's error; the caller commits or rolls back."""
    encoding = conn.info.encoding
    opening = _Command(_BEGIN_READ_WRITE)
    check = _session_check(session, encoding) if session is not None else None
    if check is not None:
        results = await _begin_checked(conn, opening, check, prepare=False)
    else:
        results = await _send(conn, [opening], prepare=False)
    failed = _first_error(results)
    if failed is not None:
        failure = results[failed]
        assert failure is not None
        raise psycopg.errors.error_from_result(failure, encoding=encoding)
    query, params = context
    await conn.execute(query, params)


async def read_role_settings(conn: psycopg.AsyncConnection[Any]) -> dict[str, dict[str, str]]:
    """The per-transaction settings of each role, from the catalog (see ROLE_SETTINGS_QUERY)."""
    cursor = await conn.execute(ROLE_SETTINGS_QUERY)
    return parse_role_settings([(str(role), str(setting)) for role, setting in await cursor.fetchall()])


@dataclass(frozen=True)
class _Batch:
    """A transaction as commands: BEGIN, the session check of a signed-in identity, then the rest (the
    context, the statements, the response settings unless a statement carries them, COMMIT)."""

    begin: _Command
    session: _Command | None
    tail: list[_Command]
    # the last statement that carries the response settings (see Statement.response), if one does
    carrier: int | None
    # the commands after COMMIT (the commit LSN): their failure is not the transaction's
    trailing: int = 0


@dataclass
class _Outcome:
    """The results of one attempt at a batch: where the request's statements start among them, and the
    first failed command with its error (the transaction then rolled back)."""

    results: list[pq.abc.PGresult | None]
    first: int
    failed: int | None = None
    error: psycopg.Error | None = None


def _batch(
    conn: psycopg.AsyncConnection[Any],
    context: RequestContext,
    statements: Sequence[Statement],
    commit_lsn: bool = False,
) -> _Batch:
    """The commands of a transaction, dumped with the connection's adapters (its encoding, its types): a
    value the driver refuses (a NUL character) is an error of its statement (of the first, for the path)."""
    encoding = conn.info.encoding
    try:
        params = context.settings()
        context_command = _command(_context_sql(len(params) // 2), params, encoding)
    except psycopg.Error as exc:
        raise StatementError(exc, statements[0] if statements else None) from None
    commands: list[_Command] = []
    for statement in statements:
        try:
            commands.append(_statement_command(statement, conn, encoding))
        except psycopg.Error as exc:
            raise StatementError(exc, statement) from None
    identity = context.identity
    carrier = next((i for i in range(len(statements) - 1, -1, -1) if statements[i].response), None)
    gucs = [] if carrier is not None else [_Command(_RESPONSE_GUCS)]
    after = [_Command(_COMMIT_LSN)] if commit_lsn else []
    return _Batch(
        begin=_Command(_BEGIN_READ_ONLY if context.read_only else _BEGIN_READ_WRITE),
        session=_session_check(identity, encoding) if identity is not None else None,
        tail=[context_command, *commands, *gucs, _Command(_COMMIT), *after],
        carrier=carrier,
        trailing=len(after),
    )


async def _send_batch(conn: psycopg.AsyncConnection[Any], batch: _Batch, prepare: bool) -> _Outcome:
    """The batch in one round trip, or two with a session check (the rest goes only once the session is
    known to be active)."""
    if batch.session is None:
        results = await _send(conn, [batch.begin, *batch.tail], prepare)
        return _Outcome(results, 2, _first_error(results, batch.trailing))
    results = await _begin_checked(conn, batch.begin, batch.session, prepare)
    failed = _first_error(results)
    if failed is not None:
        return _Outcome(results, len(results), failed)  # no request statement ran
    results = await _send(conn, batch.tail, prepare)
    # the statements' results follow the context's
    return _Outcome(results, 1, _first_error(results, batch.trailing))


async def _attempt(conn: psycopg.AsyncConnection[Any], batch: _Batch, prepare: bool) -> _Outcome:
    """One attempt at the batch; a failed one is rolled back. Interrupted between the write and the last
    result, the connection's state is unknown: it is closed (the pool replaces it)."""
    clean = False
    try:
        outcome = await _send_batch(conn, batch, prepare)
        if outcome.failed is not None:
            failure = outcome.results[outcome.failed]
            assert failure is not None
            outcome.error = psycopg.errors.error_from_result(failure, encoding=conn.info.encoding)
            await conn.execute("rollback")
        clean = True
        return outcome
    except SessionInactive:
        clean = True  # rolled back by _begin_checked
        raise
    finally:
        if not clean and not conn.closed:
            await conn.close()


def _result(
    conn: psycopg.AsyncConnection[Any],
    statements: Sequence[Statement],
    batch: _Batch,
    outcome: _Outcome,
) -> Result:
    """The rows of each statement, the response settings and the commit LSN, from the results of a
    committed batch."""
    results, first, carrier = outcome.results, outcome.first, batch.carrier
    rows = [
        _rows(results[first + index], statement.raw_text, conn) for index, statement in enumerate(statements)
    ]
    result = Result(rows=rows)
    if carrier is not None:
        gucs = results[first + carrier]
        rows[carrier] = [row[:-2] for row in rows[carrier]]
        column = (gucs.nfields - 2) if gucs is not None else 0
    else:
        gucs = results[first + len(statements)]
        column = 0
    if gucs is not None and gucs.ntuples:
        encoding = conn.info.encoding
        status, headers = gucs.get_value(0, column), gucs.get_value(0, column + 1)
        result.status = bytes(status).decode(encoding) if status is not None else None
        result.headers = bytes(headers).decode(encoding) if headers is not None else None
    if batch.trailing:
        result.lsn = _commit_lsn(results[-1])
    return result


def _commit_lsn(answer: pq.abc.PGresult | None) -> str | None:
    if answer is None or answer.status != _TUPLES_OK or answer.ntuples != 1:
        return None  # the transaction committed all the same: only the position is unknown
    value = answer.get_value(0, 0)
    return None if value is None else bytes(value).decode("ascii")


async def transaction(
    conn: psycopg.AsyncConnection[Any],
    context: RequestContext,
    statements: Sequence[Statement],
    prepare: bool,
    commit_lsn: bool = False,
) -> Result:
    """The statements in one transaction on `conn` (see `run`)."""
    batch = _batch(conn, context, statements, commit_lsn)
    for attempt in (1, 2):
        outcome = await _attempt(conn, batch, prepare)
        if outcome.error is None:
            return _result(conn, statements, batch, outcome)
        if outcome.error.sqlstate == "26000" and prepare and attempt == 1:
            # a prepared statement went missing (DISCARD ALL, DEALLOCATE): prepare afresh
            prepared_statements(conn).clear()
            continue
        assert outcome.failed is not None
        index = outcome.failed - outcome.first
        raise StatementError(outcome.error, statements[index] if 0 <= index < len(statements) else None)
    raise AssertionError("unreachable")


async def run(
    pool: AsyncConnectionPool[Any],
    context: RequestContext,
    statements: Sequence[Statement],
    *,
    timeout: float,  # noqa: ASYNC109 - the pool's wait for a connection, not a deadline for the call
    prepare: bool = True,
    commit_lsn: bool = False,
) -> Result:
    """Runs statements in one transaction on a pooled connection, in the context given (see
    RequestContext). With `prepare` they run as prepared statements of the connection (see `_send`);
    with `commit_lsn` the result carries the WAL position of the commit (Result.lsn), read in the same
    batch right after COMMIT.

    The transaction is one batch in pipeline mode (begin, context, statements, response settings, commit,
    sync): one write to the server and one read of the results. A signed-in request sends its session
    check first, in the same transaction, and the rest only once the database said the session is active.

    Raises StatementError (a database error, with the statement that failed), SessionInactive,
    psycopg_pool.PoolTimeout and psycopg.OperationalError (connection lost).
    """
    # getconn/putconn rather than pool.connection(): its `async with conn` (a commit, a no-op in autocommit)
    # is a lock and a wait per request; the state of the connection is ours to leave clean (see _attempt)
    conn = await pool.getconn(timeout=timeout)
    try:
        return await transaction(conn, context, statements, prepare, commit_lsn)
    finally:
        await pool.putconn(conn)


def server_closed(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server closed this idle pooled connection (a restart, a crash, pg_terminate_backend):
    EOF, or the FATAL error sent before it, waits on the socket. No round trip: a poll of the socket and,
    only when something arrived, libpq reading it."""
    if conn.closed:
        return True
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        return True
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    try:
        # an idle connection is sent nothing but notifications; a server going away sends its FATAL error,
        # then EOF, which a second read finds (libpq marks the connection bad only then)
        for _ in range(3):
            if not poller.poll(0):
                break
            pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return pgconn.status != pq.ConnStatus.OK


class DeadConnectionCheck:
    """A pool's check: refuses a connection the server closed while it sat in the pool; the pool hands out
    another. A database restart closes all of them: they are replaced at once (drain), so the first
    requests after a restart succeed instead of failing with 503, one per dead connection."""

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool[Any] | None = None
        self._drained_at = 0.0

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not server_closed(conn):
            return
        if self.pool is not None and time.monotonic() - self._drained_at > 1.0:
            self._drained_at = time.monotonic()
            await self.pool.drain()
        raise psycopg.OperationalError("the server closed this pooled connection")


def connection_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    application_name: str,
    configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
) -> AsyncConnectionPool[Any]:
    """The pool every path takes its connections from (requests, auth, the Stripe paths; the CLI's
    reconcile makes one of its own the same way), not opened yet, with the one dead-connection check
    (DeadConnectionCheck). Autocommit: `run` and `begin` send their own BEGIN."""
    check = DeadConnectionCheck()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        check=check,
        configure=configure,
        # psycopg prepares nothing by itself: in pipeline mode a statement prepared in a transaction that
        # then fails is forgotten by the server but not by psycopg's cache ("_pg3_N does not exist" on the
        # next use); the gateway keeps its own account (PreparedStatements)
        kwargs={"application_name": application_name, "autocommit": True, "prepare_threshold": None},
    )
    check.pool = pool
    return pool
