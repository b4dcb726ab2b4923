"""Logical backups and restores: pg_dump's custom format, a sha256 beside every dump, restore drills.

A backup is `backup_<db>_<YYYYmmdd_HHMMSS>.dump` (UTC) plus `backup_<db>_<stamp>.sha256` in `sha256sum`
format (`sha256sum -c` checks it), and optionally `backup_<db>_<stamp>.sql`, a plain script rendered from
the same dump (so from the same snapshot). Files are written under temporary names and renamed when
complete, and are readable by their owner only: a dump holds credential hashes.

A restore verifies the checksum before anything else, restores into a staging database, applies the
database-level settings and privileges of the dump (CREATE DATABASE does not carry them), analyses it, and
only then replaces the target: a failed restore leaves the existing database as it was. A plain `.sql`
script (plain.py) goes the same way through psql; it carries no database-level settings or privileges,
so those are taken from the database it replaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql

from commercecore.deploy.engine import Deployer
from commercecore.deploy.errors import DeployError
from commercecore.local import embedded
from commercecore.ops import plain
from commercecore.ops.target import OpsError, Target
from commercecore.text import one_line

BIN_DIR_ENV = "COMMERCECORE_PG_BINDIR"
CHECKSUM_SUFFIX = ".sha256"
STAMP_FORMAT = "%Y%m%d_%H%M%S"
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")
# statements of a dump that belong to the database itself, not to its contents
_DB_LEVEL_RE = re.compile(
    r"\A(?:GRANT|REVOKE|ALTER DATABASE|ALTER ROLE|COMMENT ON DATABASE|SECURITY LABEL)\b"
)
_DB_NAME_RE = r"\bDATABASE\s+(?:{quoted}|{bare})(?=[\s;]|\Z)"
# the plain script of `db backup --plain`, which names the database it was taken of
_PLAIN_NAME_RE = re.compile(r"\Abackup_(.+)_\d{8}_\d{6}\.sql\Z")


class BackupError(OpsError):
    """A backup or restore was refused or failed; the message says why, in one line."""


# -- client programs -----------------------------------------------------------------------------------


def client_program(name: str) -> Path:
    """A PostgreSQL client program: from COMMERCECORE_PG_BINDIR when set, else the embedded wheel's."""
    bin_dir = os.environ.get(BIN_DIR_ENV)
    if bin_dir:
        path = Path(bin_dir) / name
        if not path.exists():
            raise BackupError(f"{name} not found in {BIN_DIR_ENV}={bin_dir}")
        return path
    try:
        return embedded.pg_bin(name)
    except embedded.EmbeddedError as exc:
        raise BackupError(str(exc)) from None


def program_major(path: Path) -> int:
    """The major version of a PostgreSQL program (`pg_dump --version` -> 18)."""
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, check=False, timeout=30
        )
    except OSError as exc:
        raise BackupError(f"cannot run {path}: {exc.strerror}") from None
    match = _VERSION_RE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        raise BackupError(
            f"{path} --version did not say which PostgreSQL it belongs to: {proc.stdout.strip()}"
        )
    return int(match.group(1))


def check_client(name: str, server_version_num: int) -> Path:
    """The client program, refused when it is older than the server (pg_dump cannot dump newer servers)."""
    path = client_program(name)
    major = program_major(path)
    server_major = server_version_num // 10000
    if major < server_major:
        raise BackupError(
            f"{name} is PostgreSQL {major} ({path}) but the server runs PostgreSQL {server_major}: "
            f"{name} must be as new as the server; point {BIN_DIR_ENV} at the programs of PostgreSQL "
            f"{server_major} or newer"
        )
    return path


def run_program(
    args: Sequence[str | Path], *, env: dict[str, str] | None = None, what: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client program (never through a shell); a failure raises with its last stderr lines."""
    try:
        proc = subprocess.run(
            [str(arg) for arg in args], capture_output=True, text=True, env=env, check=False, input=input_text
        )
    except OSError as exc:
        raise BackupError(f"{what}: cannot run {args[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise BackupError(f"{what} failed (exit {proc.returncode}): {one_line(' '.join(lines[-3:]))}")
    return proc


# -- checksums -----------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(dump: Path) -> Path:
    return dump.with_suffix(CHECKSUM_SUFFIX)


def read_checksums(path: Path) -> dict[str, str]:
    """`sha256sum` lines (`<hex>  <name>` or `<hex> *<name>`) -> {name: hex}."""
    sums: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if match:
            sums[match.group(2)] = match.group(1).lower()
    return sums


def verify_dump(dump: Path) -> str:
    """Checks a dump against its .sha256 and that pg_restore can read it; returns the archive's TOC."""
    if not dump.exists():
        raise BackupError(f"{dump}: no such file")
    if not dump.is_file():
        raise BackupError(f"{dump} is not a file")
    sums_file = checksum_path(dump)
    if not sums_file.exists():
        raise BackupError(
            f"no checksum file {sums_file.name} beside {dump.name}: refusing to restore an unverified dump "
            f"(if you trust it, write one with: sha256sum {dump.name} > {sums_file.name})"
        )
    expected = read_checksums(sums_file).get(dump.name)
    if expected is None:
        raise BackupError(f"{sums_file} has no checksum for {dump.name}")
    actual = sha256_file(dump)
    if actual != expected:
        raise BackupError(
            f"{dump.name} does not match its checksum in {sums_file.name} (the file is truncated or was "
            f"changed: {dump.stat().st_size} bytes, sha256 {actual[:12]}…, expected {expected[:12]}…); "
            "refusing to restore it"
        )
    proc = subprocess.run(
        [str(client_program("pg_restore")), "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BackupError(f"{dump.name} is not a readable pg_dump archive: {one_line(proc.stderr)}")
    return proc.stdout


def _toc_header(toc: str, key: str) -> str | None:
    match = re.search(rf"^;\s+{re.escape(key)}:\s*(.+)$", toc, re.MULTILINE)
    return match.group(1).strip() if match else None


# -- backup --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    dump: Path
    checksum: Path
    plain: Path | None
    database: str
    server_version: str
    size: int
    seconds: float
    removed: list[Path] = field(default_factory=list)


def _safe(name: str) -> str:
    return _SAFE_NAME_RE.sub("_", name)


def _create_private(path: Path) -> None:
    """An empty file only its owner may read: the client program then writes into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)


def backups_of(directory: Path, database: str) -> list[Path]:
    """The dumps of one database in a directory, oldest first (by the stamp in their names)."""
    pattern = re.compile(rf"\Abackup_{re.escape(_safe(database))}_(\d{{8}}_\d{{6}})\.dump\Z")
    found = [(m.group(1), p) for p in directory.glob("backup_*.dump") if (m := pattern.match(p.name))]
    return [path for _stamp, path in sorted(found)]


def backup(
    url: str, directory: Path, *, plain: bool = False, keep: int | None = None, now: datetime | None = None
) -> BackupResult:
    """pg_dump -Fc of the URL's database into `directory`; with `keep`, only the newest N are kept."""
    if keep is not None and keep < 1:
        raise BackupError("--keep must be at least 1 (the backup just made)")
    target = Target.from_url(url)
    started = time.monotonic()
    with target.connect() as conn:
        row = conn.execute("select current_database(), current_setting('server_version')").fetchone()
        assert row is not None
        database, server_version = str(row[0]), str(row[1])
        version_num = int(conn.info.server_version)
    pg_dump = check_client("pg_dump", version_num)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(STAMP_FORMAT)
    files = _BackupFiles(directory, f"backup_{_safe(database)}_{stamp}", plain)
    if files.dump.exists():
        raise BackupError(f"{files.dump} exists already (one backup per database and second)")
    files.write(target, pg_dump)
    return BackupResult(
        dump=files.dump,
        checksum=files.sums,
        plain=files.sql,
        database=database,
        server_version=server_version,
        size=files.dump.stat().st_size,
        seconds=time.monotonic() - started,
        removed=[] if keep is None else _keep_newest(directory, database, keep),
    )


@dataclass(frozen=True)
class _BackupFiles:
    """The files of one backup: written under temporary names, renamed into place when complete, the
    checksum file last, so a backup with its .sha256 is a whole one."""

    directory: Path
    base: str
    plain: bool

    @property
    def dump(self) -> Path:
        return self.directory / f"{self.base}.dump"

    @property
    def sums(self) -> Path:
        return self.directory / f"{self.base}{CHECKSUM_SUFFIX}"

    @property
    def sql(self) -> Path | None:
        return self.directory / f"{self.base}.sql" if self.plain else None

    def partial(self, suffix: str) -> Path:
        return self.directory / f".{self.base}{suffix}.partial"

    def write(self, target: Target, pg_dump: Path) -> None:
        partial, partial_sql = self.partial(".dump"), self.partial(".sql")
        try:
            _create_private(partial)
            run_program(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-password",
                    "--lock-wait-timeout=60s",
                    f"--file={partial}",
                    f"--dbname={target.conninfo}",
                ],
                env=target.env(),
                what="pg_dump",
            )
            sums = {self.dump.name: sha256_file(partial)}
            if self.sql is not None:
                # the plain script is rendered from the dump, so it shows the very same snapshot
                _create_private(partial_sql)
                run_program(
                    [client_program("pg_restore"), f"--file={partial_sql}", str(partial)],
                    what="pg_restore --file",
                )
                sums[self.sql.name] = sha256_file(partial_sql)
            self._rename_into_place(partial, partial_sql, sums)
        except BaseException:
            for leftover in (partial, partial_sql, self.dump, self.sql):
                if leftover is not None and not self.sums.exists():
                    leftover.unlink(missing_ok=True)
            raise

    def _rename_into_place(self, partial: Path, partial_sql: Path, sums: dict[str, str]) -> None:
        partial.rename(self.dump)
        if self.sql is not None:
            partial_sql.rename(self.sql)
        partial_sums = self.partial(CHECKSUM_SUFFIX)
        _create_private(partial_sums)
        partial_sums.write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
        partial_sums.rename(self.sums)


def _keep_newest(directory: Path, database: str, keep: int) -> list[Path]:
    """Removes all but the newest `keep` backups of a database (dump, checksum, plain script)."""
    removed: list[Path] = []
    for old in backups_of(directory, database)[:-keep]:
        for path in (old, checksum_path(old), old.with_suffix(".sql")):
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed


# -- restore -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryCheck:
    """The sqitch registry of a restored database against the project's plan."""

    project: str
    head: str | None
    deployed: int
    pending: list[str]
    unknown: list[str]  # deployed change ids the plan does not have
    note: str = ""

    @property
    def clean(self) -> bool:
        return not self.unknown and not self.note


@dataclass(frozen=True)
class RestoreResult:
    dump: Path
    database: str
    source_database: str
    replaced: bool
    tables: int
    size: int
    seconds: float
    registry: RegistryCheck | None
    notes: tuple[str, ...] = ()


def _split_statements(script: str) -> list[str]:
    """SQL statements of a pg_dump script, without comments and psql meta-commands (\\connect, \\restrict)."""
    statements: list[str] = []
    current: list[str] = []
    in_string = False
    for raw in script.splitlines(keepends=True):
        line = raw
        if not in_string and not "".join(current).strip() and line.startswith("\\"):
            current = []
            continue
        index = 0
        while index < len(line):
            char = line[index]
            if in_string:
                in_string = char != "'"  # '' is a closing quote followed by an opening one
            elif char == "'":
                in_string = True
            elif char == "-" and line.startswith("--", index):
                line = line[:index] + "\n"  # a comment up to the end of the line
                break
            elif char == ";":
                current.append(line[:index])
                text = "".join(current).strip()
                if text:
                    statements.append(text)
                current = []
                line = line[index + 1 :]
                index = 0
                continue
            index += 1
        current.append(line)
    return statements


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def database_level_sql(dump: Path, source: str, target: str) -> tuple[str, list[str]]:
    """From the dump: the options of its CREATE DATABASE, and its database-level statements (owner,
    settings, privileges, comment) retargeted at `target`. pg_restore emits them only with --create, for
    the dump's own database name; the restore here creates the database itself, under another name."""
    list_proc = run_program(
        [client_program("pg_restore"), "--create", "--list", str(dump)], what="pg_restore --list"
    )
    wanted = [
        line
        for line in list_proc.stdout.splitlines()
        if re.match(r"\d+; \d+ \d+ (DATABASE|DATABASE PROPERTIES|ACL - DATABASE|COMMENT - DATABASE) ", line)
    ]
    with tempfile.TemporaryDirectory(prefix="cc-restore-") as scratch:
        list_file = Path(scratch) / "database.list"
        list_file.write_text("\n".join(wanted) + "\n")
        script = run_program(
            [client_program("pg_restore"), "--create", f"--use-list={list_file}", "--file=-", str(dump)],
            what="pg_restore --create",
        ).stdout
    name_re = re.compile(
        _DB_NAME_RE.format(quoted=re.escape(_quote_ident(source)), bare=re.escape(source)), re.IGNORECASE
    )
    options = "TEMPLATE = template0"
    statements: list[str] = []
    for statement in _split_statements(script):
        if statement.upper().startswith("CREATE DATABASE"):
            _head, sep, rest = statement.partition(" WITH ")
            if sep:
                options = rest
        elif _DB_LEVEL_RE.match(statement) and name_re.search(statement):
            statements.append(name_re.sub(f"DATABASE {_quote_ident(target)}", statement, count=1))
    return options, statements


def _restore_list(toc: str) -> tuple[str, list[tuple[str, str]]]:
    """The TOC with materialized view data left out (commented), and those views (schema, name) in order."""
    lines: list[str] = []
    matviews: list[tuple[str, str]] = []
    for line in toc.splitlines():
        match = re.match(r"\d+; \d+ \d+ MATERIALIZED VIEW DATA (\S+) (\S+) ", line)
        if match:
            matviews.append((match.group(1), match.group(2)))
            lines.append(f";{line}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", matviews


def _missing_owners(conn: psycopg.Connection[tuple[Any, ...]], toc: str) -> list[str]:
    # `id; catalog oid TYPE schema name owner`; entries without an owner (extensions) end in a blank
    owners = {
        line.split()[-1] for line in toc.splitlines() if re.match(r"\d+; ", line) and not line.endswith(" ")
    }
    if not owners:
        return []
    present = {str(row[0]) for row in conn.execute("select rolname from pg_roles").fetchall()}
    return sorted(owners - present)


def check_registry(url: str, project_dir: Path | None = None) -> RegistryCheck:
    """Every change id deployed in the database is a change of sqitch.plan; what is still pending."""
    deployer = Deployer(url, project_dir or embedded.project_root())
    plan = deployer.plan
    registry = deployer.layout.registry
    target = Target.from_url(url)
    with target.connect(autocommit=True) as conn:
        exists = conn.execute("select to_regclass(%s)", [f"{_quote_ident(registry)}.changes"]).fetchone()
        if exists is None or exists[0] is None:
            return RegistryCheck(plan.project, None, 0, [], [], note="no sqitch registry in the database")
        rows = conn.execute(
            sql.SQL(
                "select change_id, change from {}.changes where project = %s order by committed_at"
            ).format(sql.Identifier(registry)),
            [plan.project],
        ).fetchall()
    unknown = [f"{name} ({change_id})" for change_id, name in rows if plan.index_of(str(change_id)) is None]
    if unknown:
        return RegistryCheck(plan.project, None, len(rows), [], unknown)
    try:
        status = deployer.status()
    except DeployError as exc:
        return RegistryCheck(plan.project, None, len(rows), [], [], note=str(exc))
    head = status.head.format_name_with_tags if status.head else None
    pending = [change.format_name_with_tags for change in status.pending]
    return RegistryCheck(plan.project, head, len(rows), pending, [])


def restore(
    url: str,
    dump: Path,
    *,
    target_db: str | None = None,
    force: bool = False,
    jobs: int = 2,
    project_dir: Path | None = None,
) -> RestoreResult:
    """Restore a verified dump (an archive, or a plain SQL script) into `target_db` (default: the database
    it was dumped from) on the URL's server. An existing target is replaced only with `force` (its
    sessions are terminated)."""
    if jobs < 1:
        raise BackupError("--jobs must be at least 1")
    started = time.monotonic()
    source = open_source(dump)
    target = _target_name(dump, source.source_db, target_db)
    server = Target.from_url(url)
    maintenance = server.with_dbname("postgres")
    staging = f"{target[:40]}_restore_{secrets.token_hex(4)}"
    with maintenance.connect(autocommit=True) as conn:
        exists = _check_replaceable(conn, target, force)
        source.check(conn)
        options, db_statements = source.database_sql(server, conn, staging, target)
        conn.execute(sql.SQL("create database {} with {}").format(sql.Identifier(staging), sql.SQL(options)))
        try:
            tables, size = source.fill(server, maintenance.with_dbname(staging), jobs)
            for statement in db_statements:
                conn.execute(statement.encode())
            _swap_in(conn, staging, target, replace=exists)
        except BaseException:
            # the first error is the one to report; a staging database left over is named by its error
            with contextlib.suppress(psycopg.Error):
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(staging))
                )
            raise
    return RestoreResult(
        dump=dump,
        database=target,
        source_database=source.source_db or target,
        replaced=exists,
        tables=tables,
        size=size,
        seconds=time.monotonic() - started,
        registry=_registry_after_restore(server.with_dbname(target), project_dir),
        notes=tuple(source.notes),
    )


def _target_name(dump: Path, source_db: str | None, target_db: str | None) -> str:
    """The database to restore into (the one the dump was taken of by default); system databases are
    refused."""
    target = target_db or source_db
    if not target:
        raise BackupError(
            f"{dump.name} does not name its database (a plain script names none, and the file name is "
            "not backup_<db>_<YYYYmmdd_HHMMSS>.sql): say which with --target-db"
        )
    if len(target.encode()) > 63:
        raise BackupError(f"database name {target!r} is longer than 63 bytes")
    if target in {"postgres", "template0", "template1"}:
        raise BackupError(f"refusing to restore over the system database {target}")
    return target


class _Source(Protocol):
    """What a restore reads: a pg_dump archive or a plain SQL script."""

    @property
    def source_db(self) -> str | None: ...

    @property
    def notes(self) -> list[str]: ...

    def check(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None: ...

    def database_sql(
        self, server: Target, conn: psycopg.Connection[tuple[Any, ...]], staging: str, target: str
    ) -> tuple[str, list[str]]: ...

    def fill(self, server: Target, staged: Target, jobs: int) -> tuple[int, int]: ...


def open_source(dump: Path) -> _Source:
    """The dump, verified: an archive against its checksum (required), a plain script (a .sql file that
    is not an archive) against its checksum when a .sha256 is beside it."""
    if not dump.exists():
        raise BackupError(f"{dump}: no such file")
    if not dump.is_file():
        raise BackupError(f"{dump} is not a file")
    if dump.suffix != ".sql" or plain.is_archive(dump):
        return _Archive(dump, verify_dump(dump))
    notes = _verify_plain_checksum(dump)
    try:
        matviews = plain.scan(dump)
    except UnicodeDecodeError as exc:
        raise BackupError(f"{dump.name} is not a readable SQL script: {exc.reason}") from None
    return _Plain(dump, matviews, notes)


@dataclass(frozen=True)
class _Archive:
    dump: Path
    toc: str
    notes: list[str] = field(default_factory=list)

    @property
    def source_db(self) -> str | None:
        source = _toc_header(self.toc, "dbname")
        if not source:
            raise BackupError(f"{self.dump.name}: the archive does not name its database")
        return source

    def check(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Refuses a restore that cannot work: an old pg_restore, owners of the dump's objects missing."""
        check_client("pg_restore", int(conn.info.server_version))
        missing = _missing_owners(conn, self.toc)
        if missing:
            raise BackupError(
                f"roles owning objects of the dump do not exist on this server: {', '.join(missing)} "
                "(roles are cluster-wide: create them first, e.g. `commercecore db deploy --to roles/base` "
                "on a scratch database, or restore `pg_dumpall --roles-only`)"
            )

    def database_sql(
        self, server: Target, conn: psycopg.Connection[tuple[Any, ...]], staging: str, target: str
    ) -> tuple[str, list[str]]:
        return database_level_sql(self.dump, self.source_db or target, staging)

    def fill(self, server: Target, staged: Target, jobs: int) -> tuple[int, int]:
        return _fill_staging(server, staged, self.dump, self.toc, jobs)


@dataclass(frozen=True)
class _Plain:
    script: Path
    matviews: list[str]
    notes: list[str]

    @property
    def source_db(self) -> str | None:
        match = _PLAIN_NAME_RE.match(self.script.name)
        return match.group(1) if match else None

    def check(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        check_client("psql", int(conn.info.server_version))

    def database_sql(
        self, server: Target, conn: psycopg.Connection[tuple[Any, ...]], staging: str, target: str
    ) -> tuple[str, list[str]]:
        """A plain script carries no database-level settings or privileges (CONNECT, the owner,
        ALTER DATABASE ... SET): they are taken from the database it replaces, else from the one it was
        dumped from, when the server has it."""
        for name in dict.fromkeys(n for n in (target, self.source_db) if n):
            if _sessions(conn, name) is not None:
                self.notes.append(f"database settings and privileges taken from the database {name} here")
                return _database_level_sql_of(server, conn, name, staging)
        self.notes.append(
            "a plain script carries no database settings or privileges, and this server has no database "
            "to take them from: check CONNECT and the owner of the restored database"
        )
        return "TEMPLATE = template0", []

    def fill(self, server: Target, staged: Target, jobs: int) -> tuple[int, int]:
        plain.load(client_program("psql"), staged.conninfo, server.env(), self.script)
        return _finish_staging(staged, [sql.SQL(name) for name in self.matviews])


def _verify_plain_checksum(script: Path) -> list[str]:
    """A plain script is checked against the .sha256 beside it when there is one (a seed's own plain
    dumps have none); returns the notes for the report."""
    sums_file = checksum_path(script)
    if not sums_file.exists():
        return [f"no checksum file {sums_file.name}: the script was not verified"]
    expected = read_checksums(sums_file).get(script.name)
    if expected is None:
        raise BackupError(f"{sums_file} has no checksum for {script.name}: refusing to restore it")
    actual = sha256_file(script)
    if actual != expected:
        raise BackupError(
            f"{script.name} does not match its checksum in {sums_file.name} (the file is truncated or was "
            f"changed: {script.stat().st_size} bytes, sha256 {actual[:12]}…, expected {expected[:12]}…); "
            "refusing to restore it"
        )
    return [f"checksum verified ({sums_file.name})"]


def _database_level_sql_of(
    server: Target, conn: psycopg.Connection[tuple[Any, ...]], database: str, staging: str
) -> tuple[str, list[str]]:
    """The CREATE DATABASE options and database-level statements of a database on the server, as
    pg_dump writes them (an archive of no schema at all still has its database entries)."""
    pg_dump = check_client("pg_dump", int(conn.info.server_version))
    with tempfile.TemporaryDirectory(prefix="cc-restore-") as scratch:
        archive = Path(scratch) / "database.dump"
        run_program(
            [
                pg_dump,
                "--format=custom",
                "--schema-only",
                "--exclude-schema=*",
                "--no-password",
                f"--file={archive}",
                f"--dbname={server.with_dbname(database).conninfo}",
            ],
            env=server.env(),
            what="pg_dump of the database settings",
        )
        return database_level_sql(archive, database, staging)


def _check_replaceable(conn: psycopg.Connection[tuple[Any, ...]], target: str, force: bool) -> bool:
    """Refuses a restore that would replace a database without `force`; returns whether the target
    exists."""
    sessions = _sessions(conn, target)
    if sessions is not None and not force:
        others = f", {sessions} open connection{'s' if sessions != 1 else ''}" if sessions else ""
        raise BackupError(
            f"database {target} exists{others}: refusing to replace it; pass --force to drop it "
            "(its sessions are terminated) and restore in its place, or --target-db to restore beside it"
        )
    return sessions is not None


def _fill_staging(server: Target, staged: Target, dump: Path, toc: str, jobs: int) -> tuple[int, int]:
    """pg_restore into the staging database, then its materialized views and statistics; returns its
    table count and size."""
    # materialized views are refreshed after the restore, in an ordinary session: pg_restore runs
    # with row_security = off, under which a view over a FORCE ROW LEVEL SECURITY table cannot refresh
    entries, matviews = _restore_list(toc)
    names = [sql.Identifier(schema, name) for schema, name in matviews]
    with tempfile.TemporaryDirectory(prefix="cc-restore-") as scratch:
        list_file = Path(scratch) / "restore.list"
        list_file.write_text(entries)
        run_program(
            [
                client_program("pg_restore"),
                "--no-password",
                "--exit-on-error",
                f"--jobs={jobs}",
                f"--use-list={list_file}",
                f"--dbname={staged.conninfo}",
                str(dump),
            ],
            env=server.env(),
            what="pg_restore",
        )
    return _finish_staging(staged, names)


def _finish_staging(staged: Target, matviews: Sequence[sql.Composable]) -> tuple[int, int]:
    """Refreshes the materialized views held back and analyses the staging database; returns its table
    count and size."""
    with staged.connect(autocommit=True) as restored:
        for name in matviews:
            restored.execute(sql.SQL("refresh materialized view {}").format(name))
        # statistics are not part of a dump: without them the first queries get bad plans
        restored.execute("analyze")
        stats = restored.execute(
            "select count(*) filter (where c.relkind in ('r', 'p')),"
            " pg_database_size(current_database())"
            " from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
            " where n.nspname not in ('pg_catalog', 'information_schema')"
            " and n.nspname !~ '^pg_toast'"
        ).fetchone()
    assert stats is not None
    return int(stats[0]), int(stats[1])


def _swap_in(conn: psycopg.Connection[tuple[Any, ...]], staging: str, target: str, *, replace: bool) -> None:
    """The complete staging database takes the target's name; the old target is dropped first."""
    if replace:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(target)))
    conn.execute(
        sql.SQL("alter database {} rename to {}").format(sql.Identifier(staging), sql.Identifier(target))
    )


def _registry_after_restore(restored: Target, project_dir: Path | None) -> RegistryCheck:
    try:
        return check_registry(restored.conninfo_with_password(), project_dir)
    except (OpsError, DeployError) as exc:
        return RegistryCheck("", None, 0, [], [], note=f"not checked: {one_line(exc)}")


def _sessions(conn: psycopg.Connection[tuple[Any, ...]], database: str) -> int | None:
    """Other sessions on a database; None when it does not exist."""
    row = conn.execute(
        "select (select count(*) from pg_stat_activity as a"
        " where a.datid = d.oid and a.pid <> pg_backend_pid())"
        " from pg_database as d where d.datname = %s",
        [database],
    ).fetchone()
    return None if row is None else int(row[0])


def default_directory() -> Path:
    """db/backups/out of the project; created with a .gitignore so dumps never land in git."""
    directory = embedded.project_root() / "db" / "backups" / "out"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# backups hold customer data and credential hashes: never commit them\n*\n")
    return directory
