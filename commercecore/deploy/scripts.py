"""Running one sqitch script the way `psql --file --set ON_ERROR_STOP=1` does, over psycopg.

The script is cut into statements with psql's rules (quotes, dollar quotes, comments, parentheses and
`BEGIN ... END` bodies of SQL-standard functions), and each statement goes to the server on its own with
the simple query protocol, in a fresh session that is closed afterwards: statements outside an explicit
transaction commit one by one, an error stops the script, and a transaction the script leaves open is
rolled back when the session ends -- all as with psql. Knowing which statement failed gives the error
a line even when the server reports no position.

A script is its own transaction or none: with `begin`/`commit` it is one, without them each statement
commits by itself (what `create index concurrently` needs), as sqitch's psql runs it. The session starts
with the deployer's `lock_timeout` (locks.py).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import pq

from commercecore.deploy.errors import DeployError, ScriptError
from commercecore.deploy.locks import LOCK_NOT_AVAILABLE, BlockerWatch, LockTimeout, watch_interval
from commercecore.text import one_line

_IDENT_RE = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_DOLLAR_RE = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_PARAM_RE = re.compile(r"\$\d+")
_INLINE_LINE_RE = re.compile(r"PL/pgSQL function inline_code_block line (\d+)")
# psql remembers these words' first letters to recognise CREATE [OR REPLACE] FUNCTION|PROCEDURE
_MARKED_WORDS = frozenset({"create", "function", "procedure", "or", "replace"})


@dataclass(frozen=True)
class Statement:
    """One statement of a script: its text and where it starts."""

    text: str
    offset: int  # character offset in the script
    line: int
    body_offset: int | None  # where its first dollar-quoted string opens (DO blocks)


class _Splitter:
    def __init__(self, text: str, file: Path, root: Path | None = None) -> None:
        self.text = text
        self.file = file
        self.root = root
        self.newlines = [i for i, char in enumerate(text) if char == "\n"]
        self.statements: list[Statement] = []
        self._reset()

    def line_of(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def _reset(self) -> None:
        self.start: int | None = None
        self.body: int | None = None
        self.paren = 0
        self.begin_depth = 0
        self.markers: list[str] = []
        self.ident_count = 0

    def _finish(self, end: int) -> None:
        assert self.start is not None
        self.statements.append(
            Statement(self.text[self.start : end], self.start, self.line_of(self.start), self.body)
        )
        self._reset()

    def _fail(self, reason: str, offset: int) -> ScriptError:
        return ScriptError(self.file, reason, self.line_of(offset), root=self.root)

    def _skip_quoted(self, i: int, quote: str, backslash: bool) -> int:
        """Index after the literal opening at `i` (`''`/`""` double the quote; E'' adds backslashes)."""
        text, n, j = self.text, len(self.text), i + 1
        while j < n:
            char = text[j]
            if backslash and char == "\\":
                j += 2
                continue
            if char == quote:
                if j + 1 < n and text[j + 1] == quote:
                    j += 2
                    continue
                return j + 1
            j += 1
        raise self._fail("unterminated quoted string", i)

    def _skip_block_comment(self, i: int) -> int:
        text, n, depth, j = self.text, len(self.text), 1, i + 2
        while j < n and depth:
            if text.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("*/", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        if depth:
            raise self._fail("unterminated /* comment", i)
        return j

    def _word(self, word: str) -> None:
        lower = word.lower()
        if self.ident_count < 4:
            self.markers.append(lower[0] if lower in _MARKED_WORDS else "")
        self.ident_count += 1
        first, second, third, fourth = [*self.markers, "", "", "", ""][:4]
        in_function = first == "c" and (
            second in ("f", "p") or (second == "o" and third == "r" and fourth in ("f", "p"))
        )
        if not in_function or self.paren:
            return
        if lower == "begin":
            self.begin_depth += 1
        elif lower == "case" and self.begin_depth >= 1:
            self.begin_depth += 1  # CASE also ends with END; it only matters inside a BEGIN
        elif lower == "end" and self.begin_depth > 0:
            self.begin_depth -= 1

    def split(self) -> list[Statement]:
        text, n, i = self.text, len(self.text), 0
        while i < n:
            char = text[i]
            if char.isspace():
                i += 1
                continue
            if text.startswith("--", i):
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
                continue
            if text.startswith("/*", i):
                i = self._skip_block_comment(i)
                continue
            if self.start is None:
                self.start = i
            i = self._token(i, char)
        if self.start is not None:
            self._finish(n)
        return self.statements

    def _token(self, i: int, char: str) -> int:
        text = self.text
        if char == "'":
            return self._skip_quoted(i, "'", backslash=False)
        if char == '"':
            return self._skip_quoted(i, '"', backslash=False)
        if char == "$":
            dollar = _DOLLAR_RE.match(text, i)
            if dollar is not None:
                close = text.find(dollar.group(0), dollar.end())
                if close < 0:
                    raise self._fail(f"unterminated dollar-quoted string {dollar.group(0)}", i)
                if self.body is None:
                    self.body = i
                return close + len(dollar.group(0))
            param = _PARAM_RE.match(text, i)
            return param.end() if param else i + 1
        word = _IDENT_RE.match(text, i)
        if word is not None:
            end = word.end()
            lowered = word.group(0).lower()
            if lowered == "e" and text.startswith("'", end):
                return self._skip_quoted(end, "'", backslash=True)
            if lowered == "u" and text.startswith(("&'", '&"'), end):
                return self._skip_quoted(end + 1, text[end + 1], backslash=False)
            self._word(word.group(0))
            return end
        if char == "(":
            self.paren += 1
        elif char == ")":
            self.paren = max(0, self.paren - 1)
        elif char == ";" and not self.paren and not self.begin_depth:
            self._finish(i + 1)
        elif char == "\\":
            raise self._fail("psql meta-commands (backslash commands) are not supported in scripts", i)
        return i + 1


def split_statements(text: str, file: Path) -> list[Statement]:
    """Cut a script into statements as psql does."""
    return _Splitter(text, file).split()


def read_script(path: Path, root: Path | None = None) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ScriptError(path, "script not found", root=root) from exc
    except OSError as exc:
        raise ScriptError(path, f"cannot read script: {exc.strerror}", root=root) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScriptError(path, f"not valid UTF-8: {exc.reason}", line, root=root) from exc


def _error_line(splitter: _Splitter, statement: Statement, diag: psycopg.errors.Diagnostic) -> int:
    position = diag.statement_position
    if position and position.isdigit():
        # the server counts characters from 1 within the statement it was sent
        return splitter.line_of(statement.offset + int(position) - 1)
    inline = _INLINE_LINE_RE.search(diag.context or "")
    if inline and statement.body_offset is not None:
        # PL/pgSQL numbers a DO body from the line its opening dollar quote is on
        return splitter.line_of(statement.body_offset) + int(inline.group(1)) - 1
    return statement.line


def _harmless(statement: Statement) -> bool:
    """A session setting (`set lock_timeout = ...`): running it again changes nothing in the database."""
    words = statement.text.split(None, 1)
    return bool(words) and words[0].lower() in ("set", "reset", "show")


def run_script(
    conninfo: str,
    path: Path,
    warn: Callable[[str], None] | None = None,
    root: Path | None = None,
    *,
    lock_timeout: float = 0.0,
) -> None:
    """Run one script in its own session; ScriptError names the file (relative to `root`, the
    project directory, when below it) and the line on failure.

    `lock_timeout` (seconds, 0: wait for ever) is the session's `lock_timeout`; a statement that gives up
    waiting raises LockTimeout naming the sessions that blocked it.
    """
    text = read_script(path, root)
    splitter = _Splitter(text, path, root)
    statements = splitter.split()
    try:
        conn = psycopg.connect(
            conninfo, autocommit=True, client_encoding="utf8", application_name="commercecore-deploy"
        )
    except psycopg.OperationalError as exc:
        raise DeployError(f"cannot connect to run {path.name}: {one_line(exc)}") from exc
    with conn:
        if warn is not None:
            report = warn

            def on_notice(diag: psycopg.errors.Diagnostic) -> None:
                if diag.severity_nonlocalized == "WARNING":
                    report(f"{path.name}: {diag.message_primary}")

            conn.add_notice_handler(on_notice)
        # a script's own `set lock_timeout` still wins: it comes later
        conn.execute(
            "select pg_catalog.set_config('lock_timeout', %s, false)", [f"{int(lock_timeout * 1000)}ms"]
        )
        if lock_timeout > 0:
            with BlockerWatch(conninfo, conn.info.backend_pid, watch_interval(lock_timeout)) as watch:
                _run_statements(conn, splitter, statements, watch)
        else:
            _run_statements(conn, splitter, statements, None)
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            # psql exits and the server rolls back; psycopg would commit on leaving the block
            conn.execute("rollback")
            if warn is not None:
                warn(f"{path.name} ended inside an open transaction; it was rolled back (as psql does)")


def _run_statements(
    conn: psycopg.Connection[tuple[object, ...]],
    splitter: _Splitter,
    statements: list[Statement],
    watch: BlockerWatch | None,
) -> None:
    path, root = splitter.file, splitter.root
    committed = False  # whether a statement of the script has taken effect for good
    for statement in statements:
        try:
            conn.execute(statement.text)
        except psycopg.Error as exc:
            line = _error_line(splitter, statement, exc.diag)
            reason = exc.diag.message_primary or str(exc)
            if exc.sqlstate == LOCK_NOT_AVAILABLE:
                in_block = conn.info.transaction_status == pq.TransactionStatus.INERROR
                raise LockTimeout(
                    path,
                    reason,
                    line,
                    root,
                    blockers=watch.blockers if watch is not None else (),
                    retryable=in_block and not committed,
                ) from exc
            raise ScriptError(path, reason, line, exc.sqlstate, root) from exc
        if conn.info.transaction_status == pq.TransactionStatus.IDLE and not _harmless(statement):
            committed = True
