"""The DBA commands: `db backup|restore|basebackup|pitr-restore`, `dba ...`, `audit tail`, `jobs run`.

`register(main, db)` adds them to the `commercecore` group and its `db` group. Every expected failure prints
one line on stderr and exits 1 (`dba health` exits 0/1/2 for ok/warn/critical).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import psycopg
from rich.markup import escape
from rich.table import Table

from commercecore.cli.common import DurationType, database_url_option, err, fail, out, parse_duration
from commercecore.deploy.errors import DeployError
from commercecore.local import embedded, service_user
from commercecore.ops import backup as backups
from commercecore.ops import jobs, pitr, reports
from commercecore.ops.target import OpsError, Target
from gateway.settings import SettingsError, max_unpaid_age_from_env

P = ParamSpec("P")
R = TypeVar("R")


def _expected_errors(func: Callable[P, R]) -> Callable[P, R]:
    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (OpsError, embedded.EmbeddedError, DeployError) as exc:
            fail(exc)
        except psycopg.Error as exc:
            fail(f"PostgreSQL: {exc}")
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}")

    return wrapper


def _url(database_url: str | None) -> str:
    """--database-url, else DATABASE_URL, else the embedded cluster (started when it is not running)."""
    url = database_url or os.environ.get("DATABASE_URL")
    if not url:
        return embedded.admin_url()
    embedded.check_server_version(Target.from_url(url).conninfo_with_password())
    return url


def _uses_embedded(database_url: str | None) -> bool:
    return not (database_url or os.environ.get("DATABASE_URL"))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _limit_option(default: int) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return click.option(
        "--limit", default=default, show_default=True, type=click.IntRange(min=1), help="Rows to show."
    )


def _size(num: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(num) < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} TB"


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    for _key, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(
            *(escape("" if row.get(key) is None else str(row.get(key))) for key, _header in columns)
        )
    if not rows:
        table.add_row(*(["(none)"] + [""] * (len(columns) - 1)))
    out.print(table)


# -- db backup / restore ---------------------------------------------------------------------------


@click.command("backup")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write [db/backups/out].",
)
@click.option("--plain", is_flag=True, help="Also write a plain SQL script of the same snapshot.")
@click.option("--keep", type=click.IntRange(min=1), help="Keep only the newest N backups of this database.")
@database_url_option()
@_expected_errors
def backup_command(directory: Path | None, plain: bool, keep: int | None, database_url: str | None) -> None:
    """Logical backup (pg_dump custom format) with a .sha256 checksum file."""
    url = _url(database_url)
    result = backups.backup(url, directory or backups.default_directory(), plain=plain, keep=keep)
    # absolute paths: the line a cron mail shows says where the files are, whatever the working directory
    out.print(
        f"backup of {escape(result.database)} (PostgreSQL {escape(result.server_version)}) written to "
        f"{escape(str(result.dump.absolute()))} ({_size(result.size)}, {result.seconds:.1f} s)"
    )
    out.print(f"checksum: {escape(str(result.checksum.absolute()))}")
    if result.plain:
        out.print(f"plain SQL: {escape(str(result.plain.absolute()))}")
    if result.removed:
        out.print(f"retention: removed {len(result.removed)} old file(s) (--keep {keep})")


@click.command("restore")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option(
    "--target-db", metavar="NAME", help="Restore into this database [the one the dump was taken of]."
)
@click.option(
    "--force", is_flag=True, help="Replace an existing target database (its sessions are terminated)."
)
@click.option(
    "--jobs", default=2, show_default=True, type=click.IntRange(min=1), help="Parallel pg_restore jobs."
)
@database_url_option()
@_expected_errors
def restore_command(
    file: Path, target_db: str | None, force: bool, jobs: int, database_url: str | None
) -> None:
    """Verify a backup's checksum and restore it (into a staging database, swapped in when complete).

    FILE is a .dump archive (its .sha256 required) or a plain SQL script (pg_dump's default output, the
    .sql of `db backup --plain`; checked against a .sha256 beside it when there is one).
    """
    url = _url(database_url)
    result = backups.restore(url, file, target_db=target_db, force=force, jobs=jobs)
    action = "replaced" if result.replaced else "created"
    out.print(
        f"restored {escape(result.dump.name)} into {escape(result.database)} ({action}; dumped from "
        f"{escape(result.source_database)}): {result.tables} tables, {_size(result.size)}, "
        f"{result.seconds:.1f} s"
    )
    for note in result.notes:
        out.print(f"note: {escape(note)}")
    registry = result.registry
    if registry is None:
        return
    if registry.unknown:
        fail(
            "the restored database has changes that sqitch.plan does not know: "
            f"{', '.join(registry.unknown)} (a backup of another project or of newer code)"
        )
    if registry.note:
        out.print(f"sqitch registry: {escape(registry.note)}")
        return
    pending = (
        f"{len(registry.pending)} change(s) pending: run `commercecore db deploy`"
        if registry.pending
        else "up to date"
    )
    out.print(
        f"sqitch registry: {registry.deployed} changes deployed, head {escape(str(registry.head))}; {pending}"
    )


# -- physical backups and point-in-time recovery ----------------------------------------------------


@click.command("basebackup")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Parent directory [.data/basebackups].",
)
@click.option("--format", "fmt", type=click.Choice(pitr.FORMATS), default="tar", show_default=True)
@click.option(
    "--archive",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the server archives WAL, recorded for pitr-restore [embedded: .data/wal-archive].",
)
@database_url_option()
@_expected_errors
def basebackup_command(
    directory: Path | None, fmt: str, archive: Path | None, database_url: str | None
) -> None:
    """Physical base backup (pg_basebackup, manifest) verified with pg_verifybackup."""
    url = _url(database_url)
    password_file: Path | None = None
    if _uses_embedded(database_url):
        cluster = embedded.default_cluster()
        archive = archive or cluster.wal_archive
        password_file = cluster.password_file
        directory = directory or cluster.data_dir.parent / "basebackups"
    if directory is None:
        directory = backups.default_directory()
    result = pitr.base_backup(url, directory, fmt=fmt, archive=archive, password_file=password_file)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    out.print(
        f"base backup ({result.format}) verified: {escape(str(result.directory))} ({_size(result.size)}, "
        f"{result.seconds:.1f} s); WAL {result.start_lsn} .. {result.end_lsn} on timeline {result.timeline}"
    )
    out.print(f"restorable to any time after {escape(result.finished_at)} that the WAL archive covers")


@click.command("pitr-restore")
@click.option("--to", "to_time", metavar="TIMESTAMP", help="Recover to this time (with its UTC offset).")
@click.option("--to-lsn", metavar="LSN", help="Recover to this WAL location.")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The base backup.",
)
@click.option(
    "--into",
    "into",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="A new data directory.",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Port of the restored server [a free one].")
@click.option(
    "--archive",
    type=click.Path(path_type=Path, file_okay=False),
    help="WAL archive [recorded in the backup].",
)
@click.option("--timeout", default=600.0, show_default=True, type=float, help="Seconds to wait for recovery.")
@click.option("--stop", is_flag=True, help="Stop the restored server after checking it.")
@_expected_errors
def pitr_restore_command(
    to_time: str | None,
    to_lsn: str | None,
    source: Path,
    into: Path,
    port: int | None,
    archive: Path | None,
    timeout: float,
    stop: bool,
) -> None:
    """Point-in-time recovery of a base backup into a NEW data directory, on its own port."""
    result = pitr.pitr_restore(
        source,
        into,
        target_time=to_time,
        target_lsn=to_lsn,
        archive=archive,
        port=port,
        live_data_dir=embedded.default_cluster().data_dir,
        timeout=timeout,
    )
    cluster = result.cluster
    out.print(
        f"recovered ({escape(result.target)}) in {result.seconds:.1f} s and promoted: "
        f"timeline {result.timeline}"
    )
    out.print(
        f"last replayed WAL {result.replay_lsn}, "
        f"last transaction replayed at {escape(str(result.last_transaction_at))}"
    )
    if result.stop_reason:
        out.print(f"server log: {escape(result.stop_reason)}")
    if stop:
        cluster.stop()
        out.print(f"stopped; data kept in {escape(str(cluster.data_dir))}")
        return
    out.print(
        f"running on 127.0.0.1:{cluster.port} (socket {escape(str(cluster.socket_dir))}), "
        f"log {escape(str(cluster.log_file))}"
    )
    as_user = f"runuser -u {service_user.SYSTEM_USER} -- " if os.geteuid() == 0 else ""
    pg_ctl = escape(str(embedded.pg_bin("pg_ctl")))
    out.print(f"stop it with: {as_user}{pg_ctl} -D {escape(str(cluster.server_data_dir))} stop")


# -- dba -------------------------------------------------------------------------------------------


@click.group("dba")
def dba() -> None:
    """Monitoring: top queries, indexes, bloat, locks, health (add --json for machines)."""


@dba.command("top")
@_limit_option(10)
@json_option
@database_url_option()
@_expected_errors
def dba_top(limit: int, as_json: bool, database_url: str | None) -> None:
    """Statements by total execution time (pg_stat_statements), and the cache hit ratio."""
    with reports.open_connection(_url(database_url)) as conn:
        queries = reports.top_queries(conn, limit)
        cache = reports.cache_hit_ratio(conn)
    if as_json:
        _echo_json({"queries": queries, "cache": cache})
        return
    _table(
        "Top queries by total time",
        queries,
        [
            ("total_exec_ms", "total ms"),
            ("calls", "calls"),
            ("mean_exec_ms", "mean ms"),
            ("rows", "rows"),
            ("cache_hit_ratio", "cache hit"),
            ("role_name", "role"),
            ("query", "query"),
        ],
    )
    out.print(
        f"cache hit ratio: database {cache.get('database_hit_ratio')}, "
        f"tables {cache.get('table_hit_ratio')}, indexes {cache.get('index_hit_ratio')}"
    )


@dba.command("indexes")
@_limit_option(30)
@json_option
@database_url_option()
@_expected_errors
def dba_indexes(limit: int, as_json: bool, database_url: str | None) -> None:
    """Index usage; unused indexes and duplicates (same table, columns/expressions and predicate)."""
    with reports.open_connection(_url(database_url)) as conn:
        report = reports.index_report(conn, limit)
    if as_json:
        _echo_json(report)
        return
    columns = [
        ("schema_name", "schema"),
        ("table_name", "table"),
        ("index_name", "index"),
        ("idx_scan", "scans"),
        ("index_size", "size"),
        ("unused", "unused"),
    ]
    since = report["stats_since"] or "never reset"
    _table(f"Indexes (largest first; statistics since: {since})", report["indexes"], columns)
    _table("Unused indexes (never scanned, not enforcing uniqueness)", report["unused"], columns)
    _table(
        "Duplicate indexes (keep the first, drop the rest)",
        [
            {**g, "indexes": ", ".join(g["indexes"]), "definition": g["definitions"][0]}
            for g in report["duplicates"]
        ],
        [
            ("schema_name", "schema"),
            ("table_name", "table"),
            ("indexes", "indexes"),
            ("definition", "definition"),
        ],
    )


@dba.command("bloat")
@_limit_option(10)
@json_option
@database_url_option()
@_expected_errors
def dba_bloat(limit: int, as_json: bool, database_url: str | None) -> None:
    """Approximate bloat (pgstattuple_approx) of the largest tables."""
    with reports.open_connection(_url(database_url)) as conn:
        rows = reports.bloat(conn, limit)
    if as_json:
        _echo_json(rows)
        return
    shown = [
        {**r, "size": _size(r["table_bytes"]), "bloat_size": _size(r.get("bloat_bytes", 0))} for r in rows
    ]
    _table(
        "Bloat of the largest tables",
        shown,
        [
            ("table_name", "table"),
            ("size", "size"),
            ("dead_percent", "dead %"),
            ("free_percent", "free %"),
            ("bloat_size", "bloat"),
            ("n_dead_tup", "dead tuples"),
            ("last_vacuum", "last vacuum"),
            ("autovacuum_disabled", "autovacuum off"),
            ("bloated", "bloated"),
        ],
    )


@dba.command("locks")
@_limit_option(50)
@click.option(
    "--long", "long_seconds", default=60.0, show_default=True, help="Show statements running this long."
)
@click.option(
    "--idle",
    "idle_seconds",
    default=10.0,
    show_default=True,
    help="Show sessions idle in a transaction this long.",
)
@json_option
@database_url_option()
@_expected_errors
def dba_locks(
    limit: int, long_seconds: float, idle_seconds: float, as_json: bool, database_url: str | None
) -> None:
    """Blocking chains (pg_blocking_pids), long-running statements and idle-in-transaction sessions."""
    with reports.open_connection(_url(database_url)) as conn:
        chains = reports.blocking(conn)[:limit]
        long_sessions = reports.sessions(conn, running_seconds=long_seconds, idle_seconds=idle_seconds)[
            :limit
        ]
    if as_json:
        _echo_json({"blocking": chains, "sessions": long_sessions})
        return
    _table(
        "Blocked sessions (longest wait first)",
        chains,
        [
            ("blocked_pid", "blocked pid"),
            ("blocking_pid", "blocking pid"),
            ("wait_seconds", "wait s"),
            ("lock_mode", "mode"),
            ("relation", "relation"),
            ("blocked_query", "blocked query"),
            ("blocking_state", "blocker state"),
            ("blocking_query", "blocker query"),
        ],
    )
    _table(
        "Long-running and idle-in-transaction sessions",
        long_sessions,
        [
            ("pid", "pid"),
            ("kind", "kind"),
            ("user_name", "user"),
            ("database", "database"),
            ("xact_seconds", "xact s"),
            ("state_seconds", "state s"),
            ("query", "query"),
        ],
    )


def _threshold(values: tuple[str, ...]) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or name not in reports.THRESHOLDS:
            raise reports.DbaError(
                f"--threshold {item!r}: use NAME=VALUE with NAME one of {', '.join(reports.THRESHOLDS)}"
            )
        try:
            parsed[name] = float(raw)
        except ValueError:
            raise reports.DbaError(f"--threshold {item!r}: {raw!r} is not a number") from None
    return parsed


@dba.command("health")
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE", help="Override a threshold.")
@click.option(
    "--gateway",
    metavar="URL",
    help="Also a gateway's routing counts and its view of the replicas, from its /metrics (bearer: "
    "$COMMERCECORE_METRICS_TOKEN when set), e.g. http://127.0.0.1:8000.",
)
@json_option
@database_url_option()
def dba_health(
    thresholds: tuple[str, ...], gateway: str | None, as_json: bool, database_url: str | None
) -> None:
    """One verdict, ok / warn / critical (exit 0 / 1 / 2), from every check."""
    try:
        overrides = _threshold(thresholds)
        with reports.open_connection(_url(database_url)) as conn:
            result = reports.health(conn, overrides)
        if gateway:
            result.routing = reports.gateway_routing(_gateway_metrics(gateway))
    except (OpsError, embedded.EmbeddedError, psycopg.Error) as exc:
        fail(f"critical: {exc}", code=2)
    if as_json:
        _echo_json(result.as_dict())
        sys.exit(result.exit_code)
    _print_health(result)
    sys.exit(result.exit_code)


def _gateway_metrics(base_url: str) -> str:
    """A gateway's /metrics text; the reason in one line when it cannot be had."""
    import httpx

    token = os.environ.get("COMMERCECORE_METRICS_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(base_url.rstrip("/") + "/metrics", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise reports.DbaError(f"gateway {base_url}: {exc}") from None
    if response.status_code != 200:
        raise reports.DbaError(f"gateway {base_url}/metrics answered {response.status_code}")
    return response.text


def _print_health(result: reports.Health) -> None:
    colours = {"ok": "green", "warn": "yellow", "critical": "bold red"}
    table = Table(title="Health", title_justify="left")
    for header in ("check", "status", "value", "detail"):
        table.add_column(header, overflow="fold")
    for check in result.checks:
        table.add_row(
            check.name,
            f"[{colours[check.status]}]{check.status}[/]",
            escape("" if check.value is None else str(check.value)),
            escape(check.detail),
        )
    out.print(table)
    _table(
        "I/O (pg_stat_io)",
        result.io,
        [
            ("backend_type", "backend"),
            ("object", "object"),
            ("context", "context"),
            ("reads", "reads"),
            ("hits", "hits"),
            ("hit_ratio", "hit ratio"),
            ("writes", "writes"),
            ("extends", "extends"),
            ("evictions", "evictions"),
            ("fsyncs", "fsyncs"),
        ],
    )
    _table(
        "Replicas (pg_stat_replication)",
        result.replicas,
        [
            ("name", "name"),
            ("client", "client"),
            ("state", "state"),
            ("replay_lsn", "replayed"),
            ("lag_bytes", "lag bytes"),
            ("lag_seconds", "lag s"),
            ("slot", "slot"),
        ],
    )
    if result.routing:
        columns = [("target", "target"), ("reason", "reason"), ("requests", "requests")]
        columns += [("up", "up"), ("lag_bytes", "lag bytes"), ("lag_seconds", "lag s")]
        _table("Gateway routing (/metrics)", result.routing, columns)
    out.print(f"verdict: [{colours[result.verdict]}]{result.verdict}[/]")


# -- audit -----------------------------------------------------------------------------------------


@click.group("audit")
def audit() -> None:
    """The audit trail (audit.log): who changed what, with the request id."""


@audit.command("tail")
@click.option("--table", metavar="NAME", help="core.orders or orders.")
@click.option("--actor", metavar="USER_ID|ROLE", help="A user id (JWT sub) or a role name.")
@click.option("--request-id", metavar="ID", help="The X-Request-Id of a request.")
@_limit_option(20)
@json_option
@database_url_option()
@_expected_errors
def audit_tail(
    table: str | None,
    actor: str | None,
    request_id: str | None,
    limit: int,
    as_json: bool,
    database_url: str | None,
) -> None:
    """The newest audit entries first."""
    with reports.open_connection(_url(database_url)) as conn:
        rows = reports.audit_tail(conn, table=table, actor=actor, request_id=request_id, limit=limit)
    if as_json:
        _echo_json(rows)
        return
    shown = [
        {
            **row,
            "actor": f"{row['actor_user_id']} ({row['actor_role']})"
            if row["actor_user_id"]
            else row["actor_role"],
            "changed": ", ".join(row["changed"] or []),
        }
        for row in rows
    ]
    _table(
        "audit.log (newest first)",
        shown,
        [
            ("at", "at"),
            ("actor", "actor"),
            ("request_id", "request id"),
            ("table_name", "table"),
            ("operation", "op"),
            ("row_id", "row"),
            ("changed", "changed"),
        ],
    )


# -- jobs ------------------------------------------------------------------------------------------


@click.group("jobs")
def jobs_group() -> None:
    """Periodic jobs: expire unpaid orders, refresh reports, reconcile payments, purge what expired."""


@jobs_group.command("run")
@click.option(
    "--interval", default=60.0, show_default=True, type=click.FloatRange(min=1), help="Seconds per tick."
)
@click.option("--once", is_flag=True, help="Run one tick and exit.")
@click.option(
    "--ttl",
    default=None,
    help="Unpaid orders older than this expire unless a checkout is under way"
    " [$ORDER_PAYMENT_TTL, else 30min].",
)
@click.option(
    "--max-age",
    default=None,
    type=DurationType(),
    help="Unpaid orders older than this expire, whatever their checkouts (3600, 90s, 60min, '1 hour', 2d)"
    " [$ORDER_MAX_UNPAID_AGE, else 60min].",
)
@click.option(
    "--reconcile-after",
    default="15min",
    show_default=True,
    help="Payment attempts open this long are looked up at Stripe.",
)
@click.option(
    "--purge-batch",
    default=jobs.DEFAULT_PURGE_BATCH,
    show_default=True,
    type=click.IntRange(min=1, max=100_000),
    help="Rows deleted per transaction when purging expired sessions, login failures and idempotency keys.",
)
@database_url_option()
@_expected_errors
def jobs_run(
    interval: float,
    once: bool,
    ttl: str | None,
    max_age: timedelta | None,
    reconcile_after: str,
    purge_batch: int,
    database_url: str | None,
) -> None:
    """Run the jobs every --interval seconds (each job once per tick across all runners); SIGTERM stops."""
    from gateway import logs

    logs.configure(logging.INFO)
    url = _url(database_url)
    expire_after = _positive_duration(ttl or os.environ.get("ORDER_PAYMENT_TTL") or "30min", "--ttl")
    if max_age is None:
        # as the gateway reads it (the same forms and default): checkout and expiry agree on the end
        try:
            max_age = max_unpaid_age_from_env(os.environ)
        except SettingsError as exc:
            raise jobs.JobsError(str(exc)) from None
    elif max_age <= timedelta(0):
        raise jobs.JobsError(f"--max-age {max_age} must be positive")
    after = _positive_duration(reconcile_after, "--reconcile-after")
    runner = jobs.Runner(
        url, jobs.default_jobs(url, expire_after, after, purge_batch, max_age), interval=interval
    )
    with jobs.stop_on_signals(runner.stop):
        if once:
            try:
                outcomes = runner.tick()
            finally:
                runner.close()
            if "failed" in outcomes.values():
                sys.exit(1)
            return
        runner.run_forever()


def _positive_duration(value: str, option: str) -> timedelta:
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise jobs.JobsError(f"{option} {exc}") from None
    if duration <= timedelta(0):
        raise jobs.JobsError(f"{option} {value!r} must be positive")
    return duration


def register(main: click.Group, db: click.Group) -> None:
    """Adds the DBA commands: `db backup|restore|basebackup|pitr-restore`, `dba`, `audit`, `jobs`."""
    for command in (backup_command, restore_command, basebackup_command, pitr_restore_command):
        db.add_command(command)
    main.add_command(dba)
    main.add_command(audit)
    main.add_command(jobs_group)
