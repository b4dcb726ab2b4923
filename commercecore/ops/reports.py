"""Monitoring reports for a DBA: top queries, index usage, bloat, blocking chains, sessions, I/O, health.

Reports read the `ops` views of the plan where they exist (ops.top_queries, ops.index_usage,
ops.cache_hit_ratio, ops.table_bloat) and the statistics views directly for the rest (duplicate indexes,
pg_blocking_pids, pg_stat_activity, pg_stat_io, pg_stat_archiver). Every report is a list of plain dicts,
ready for JSON. Sessions of the reports use a short lock_timeout: a monitoring tool must never queue
behind the lock it is trying to report.

`health` combines the reports into one verdict, `ok`, `warn` or `critical` (exit codes 0, 1, 2), using
THRESHOLDS (documented in the README; each can be overridden on the command line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from commercecore.ops.target import OpsError, Target
from commercecore.text import one_line

Row = dict[str, Any]
Status = Literal["ok", "warn", "critical"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "critical": 2}

# name -> (value, meaning); values compare against the measurement named in each check
THRESHOLDS: dict[str, float] = {
    "connections_warn": 0.80,  # share of max_connections in use
    "connections_critical": 0.95,
    "cache_hit_warn": 0.95,  # database buffer cache hit ratio below this ...
    "cache_hit_critical": 0.90,
    "cache_hit_min_blocks": 10_000,  # ... judged only once this many blocks were read or hit
    "blocked_wait_warn": 10,  # seconds a session has waited for a lock
    "blocked_wait_critical": 60,
    "idle_in_transaction_warn": 60,  # seconds a session has sat idle inside a transaction
    "idle_in_transaction_critical": 600,
    "long_running_warn": 300,  # seconds a statement has been running
    "long_running_critical": 1800,
    "xid_age_warn": 500_000_000,  # age(datfrozenxid) of the oldest database (wraparound at 2^31)
    "xid_age_critical": 1_200_000_000,
    "bloat_warn_percent": 50,  # dead + free space of a table ...
    "bloat_min_bytes": 8 * 1024 * 1024,  # ... that is at least this large
    "bloat_report_percent": 30,  # `dba bloat` marks tables from this share on ...
    "bloat_report_min_bytes": 1024 * 1024,  # ... and this size
    "replication_lag_warn": 5,  # seconds a streaming replica is behind (COMMERCECORE_REPLICA_MAX_LAG)
    "replication_lag_critical": 60,
}


class DbaError(OpsError):
    """A report could not be produced; the message says why."""


def connect(url: str) -> psycopg.Connection[Row]:
    target = Target.from_url(url)
    conn: psycopg.Connection[Row] = psycopg.connect(
        target.conninfo_with_password(),
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=10,
        application_name="commercecore-dba",
    )
    conn.execute("set lock_timeout = '2s'")
    conn.execute("set statement_timeout = '60s'")
    return conn


def open_connection(url: str) -> psycopg.Connection[Row]:
    try:
        return connect(url)
    except psycopg.OperationalError as exc:
        raise DbaError(f"cannot connect to {Target.from_url(url).display}: {one_line(exc)}") from None


def plain(value: Any) -> Any:
    """A JSON-friendly value: Decimal -> float, datetime -> ISO text, interval -> seconds."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def _rows(conn: psycopg.Connection[Row], query: str, params: Any = None) -> list[Row]:
    return [plain(row) for row in conn.execute(query.encode(), params).fetchall()]


def _exists(conn: psycopg.Connection[Row], regclass: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null as present", [regclass]).fetchone()
    return bool(row and row["present"])


def _require(conn: psycopg.Connection[Row], regclass: str) -> None:
    if not _exists(conn, regclass):
        raise DbaError(
            f"{regclass} does not exist in this database: deploy the plan (commercecore db deploy) first"
        )


# -- top queries and cache -----------------------------------------------------------------------------


def top_queries(conn: psycopg.Connection[Row], limit: int = 10) -> list[Row]:
    """Statements of this database by total execution time (ops.top_queries, pg_stat_statements)."""
    _require(conn, "ops.top_queries")
    try:
        return _rows(
            conn,
            """
            select queryid, role_name, calls, rows, total_exec_ms, mean_exec_ms,
                   shared_blks_hit_ratio as cache_hit_ratio,
                   regexp_replace(left(query, 2000), '\\s+', ' ', 'g') as query
            from ops.top_queries
            order by total_exec_ms desc
            limit %s
            """,
            [limit],
        )
    except psycopg.errors.ObjectNotInPrerequisiteState:
        raise DbaError(
            "pg_stat_statements is not loaded: add it to shared_preload_libraries and restart"
        ) from None


def cache_hit_ratio(conn: psycopg.Connection[Row]) -> Row:
    _require(conn, "ops.cache_hit_ratio")
    rows = _rows(conn, "select * from ops.cache_hit_ratio")
    return rows[0] if rows else {}


# -- indexes -------------------------------------------------------------------------------------------

_DUPLICATES = """
with idx as (
  select
    i.indexrelid, i.indrelid, n.nspname as schema_name, t.relname as table_name, c.relname as index_name,
    i.indisprimary, i.indisunique,
    exists (select from pg_constraint as k where k.conindid = i.indexrelid) as backs_constraint,
    pg_relation_size(i.indexrelid) as size_bytes,
    coalesce(s.idx_scan, 0) as idx_scan,
    -- what makes two indexes the same: access method, key columns, expressions, predicate, opclasses,
    -- collations and options (ASC/DESC, NULLS FIRST)
    concat_ws(' | ', c.relam::text, i.indkey::text, i.indclass::text, i.indcollation::text,
              i.indoption::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
              coalesce(pg_get_expr(i.indpred, i.indrelid), ''))
      as signature,
    pg_get_indexdef(i.indexrelid) as definition
  from pg_index as i
  join pg_class as c on c.oid = i.indexrelid
  join pg_class as t on t.oid = i.indrelid
  join pg_namespace as n on n.oid = t.relnamespace
  left join pg_stat_all_indexes as s on s.indexrelid = i.indexrelid
  where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
)
select
  schema_name, table_name,
  array_agg(index_name order by indisprimary desc, backs_constraint desc, indisunique desc,
    idx_scan desc, index_name) as indexes,
  array_agg(definition order by indisprimary desc, backs_constraint desc, indisunique desc,
    idx_scan desc, index_name) as definitions,
  sum(size_bytes) - max(size_bytes) as wasted_bytes_at_least
from idx
group by schema_name, table_name, indrelid, signature
having count(*) > 1
order by sum(size_bytes) desc
"""


def index_report(conn: psycopg.Connection[Row], limit: int = 50) -> Row:
    """Index usage (ops.index_usage), the unused ones and groups of duplicates (first of a group: keep)."""
    _require(conn, "ops.index_usage")
    usage = _rows(
        conn,
        """
        select schema_name, table_name, index_name, idx_scan, last_idx_scan, index_size_bytes, index_size,
               is_unique, is_primary, unused
        from ops.index_usage
        order by index_size_bytes desc, schema_name, index_name
        """,
    )
    duplicates = _rows(conn, _DUPLICATES)
    for group in duplicates:
        group["keep"] = group["indexes"][0]
        group["redundant"] = group["indexes"][1:]
    since = _rows(conn, "select stats_reset from pg_stat_database where datname = current_database()")
    return {
        "stats_since": since[0]["stats_reset"] if since else None,
        "indexes": usage[:limit],
        "unused": [row for row in usage if row["unused"]],
        "duplicates": duplicates,
    }


# -- bloat ---------------------------------------------------------------------------------------------


def bloat(
    conn: psycopg.Connection[Row], limit: int = 10, thresholds: Mapping[str, float] = THRESHOLDS
) -> list[Row]:
    """Approximate bloat (pgstattuple_approx through ops.table_bloat) of the largest tables."""
    tables = _rows(
        conn,
        """
        select c.oid, n.nspname || '.' || c.relname as table_name, pg_relation_size(c.oid) as table_bytes,
               pg_total_relation_size(c.oid) as total_bytes, s.n_live_tup, s.n_dead_tup,
               greatest(s.last_vacuum, s.last_autovacuum) as last_vacuum,
               coalesce('autovacuum_enabled=false' = any(c.reloptions), false) as autovacuum_disabled
        from pg_class as c
        join pg_namespace as n on n.oid = c.relnamespace
        left join pg_stat_all_tables as s on s.relid = c.oid
        where c.relkind in ('r', 'm') and n.nspname not in ('pg_catalog', 'information_schema')
          and n.nspname !~ '^pg_toast'
        order by pg_relation_size(c.oid) desc, 2
        limit %s
        """,
        [limit],
    )
    if not _function_exists(conn, "ops.table_bloat(regclass)"):
        raise DbaError(
            "ops.table_bloat does not exist in this database: deploy the plan (commercecore db deploy) first"
        )
    report: list[Row] = []
    for table in tables:
        oid = table.pop("oid")
        try:
            measured = _rows(
                conn,
                "select dead_tuple_percent, dead_tuple_len, approx_free_percent, approx_free_space,"
                " scanned_percent from ops.table_bloat(%s::oid::regclass)",
                [oid],
            )
        except psycopg.errors.LockNotAvailable:
            report.append({**table, "note": "skipped: table locked"})
            continue
        m = measured[0]
        percent = round((m["dead_tuple_percent"] or 0) + (m["approx_free_percent"] or 0), 2)
        row = {
            **table,
            "dead_percent": round(m["dead_tuple_percent"] or 0, 2),
            "free_percent": round(m["approx_free_percent"] or 0, 2),
            "bloat_percent": percent,
            "bloat_bytes": int((m["dead_tuple_len"] or 0) + (m["approx_free_space"] or 0)),
            "scanned_percent": round(m["scanned_percent"] or 0, 1),
        }
        row["bloated"] = (
            percent >= thresholds["bloat_report_percent"]
            and table["table_bytes"] >= thresholds["bloat_report_min_bytes"]
        )
        report.append(row)
    return report


def _function_exists(conn: psycopg.Connection[Row], signature: str) -> bool:
    row = conn.execute("select to_regprocedure(%s) is not null as present", [signature]).fetchone()
    return bool(row and row["present"])


# -- locks and sessions --------------------------------------------------------------------------------

_BLOCKING = """
with waiting as (
  select a.pid, a.usename, a.datname, a.application_name, a.query, a.wait_event_type, a.wait_event,
         pg_blocking_pids(a.pid) as blockers
  from pg_stat_activity as a
  where a.wait_event_type = 'Lock'
)
select distinct on (w.pid, b.blocker)
  w.pid as blocked_pid,
  w.usename as blocked_user,
  w.datname as database,
  round(extract(epoch from clock_timestamp() - coalesce(l.waitstart, x_w.query_start))::numeric, 3)
    as wait_seconds,
  l.locktype as lock_type,
  l.mode as lock_mode,
  case when l.relation is not null then
    case when l.database = (select oid from pg_database where datname = current_database())
      then l.relation::regclass::text else l.relation::text end
  end as relation,
  left(w.query, 500) as blocked_query,
  b.blocker as blocking_pid,
  x.usename as blocking_user,
  x.state as blocking_state,
  round(extract(epoch from clock_timestamp() - x.xact_start)::numeric, 3) as blocking_xact_seconds,
  left(x.query, 500) as blocking_query,
  cardinality(pg_blocking_pids(b.blocker)) = 0 as blocking_is_root
from waiting as w
cross join lateral unnest(w.blockers) as b (blocker)
left join pg_stat_activity as x on x.pid = b.blocker
left join pg_stat_activity as x_w on x_w.pid = w.pid
left join lateral (
  select lk.locktype, lk.mode, lk.relation, lk.database, lk.waitstart
  from pg_locks as lk where lk.pid = w.pid and not lk.granted limit 1
) as l on true
where cardinality(w.blockers) > 0
order by w.pid, b.blocker
"""


def blocking(conn: psycopg.Connection[Row]) -> list[Row]:
    """Who waits for whom (pg_blocking_pids), longest wait first; `blocking_is_root`: the head of a chain."""
    rows = _rows(conn, _BLOCKING)
    return sorted(rows, key=lambda row: -(row["wait_seconds"] or 0))


def sessions(conn: psycopg.Connection[Row], *, running_seconds: float, idle_seconds: float) -> list[Row]:
    """Client sessions running a statement for long, or idle inside a transaction for long."""
    return _rows(
        conn,
        """
        select pid, usename as user_name, datname as database, application_name,
               host(client_addr) as client_addr, state,
               round(extract(epoch from clock_timestamp() - xact_start)::numeric, 3) as xact_seconds,
               round(extract(epoch from clock_timestamp() - query_start)::numeric, 3) as query_seconds,
               round(extract(epoch from clock_timestamp() - state_change)::numeric, 3) as state_seconds,
               wait_event_type, wait_event, left(query, 500) as query,
               case when state = 'active' then 'long_running' else 'idle_in_transaction' end as kind
        from pg_stat_activity
        where backend_type = 'client backend' and pid <> pg_backend_pid()
          and (
            (state = 'active' and clock_timestamp() - query_start >= make_interval(secs => %s))
            or (state in ('idle in transaction', 'idle in transaction (aborted)')
                and clock_timestamp() - state_change >= make_interval(secs => %s))
          )
        order by xact_start nulls last
        """,
        [running_seconds, idle_seconds],
    )


# -- I/O -----------------------------------------------------------------------------------------------


def io_summary(conn: psycopg.Connection[Row], limit: int = 15) -> list[Row]:
    """pg_stat_io (PostgreSQL 16+) by backend type, object and context, busiest first."""
    if not _exists(conn, "pg_catalog.pg_stat_io"):
        return []
    return _rows(
        conn,
        """
        select backend_type, object, context,
               sum(coalesce(reads, 0))::bigint as reads, sum(coalesce(hits, 0))::bigint as hits,
               sum(coalesce(writes, 0))::bigint as writes, sum(coalesce(extends, 0))::bigint as extends,
               sum(coalesce(evictions, 0))::bigint as evictions, sum(coalesce(fsyncs, 0))::bigint as fsyncs,
               round(sum(coalesce(read_time, 0))::numeric, 1) as read_ms,
               round(sum(coalesce(write_time, 0))::numeric, 1) as write_ms,
               round(sum(hits)::numeric / nullif(sum(coalesce(hits, 0) + coalesce(reads, 0)), 0), 4)
                 as hit_ratio
        from pg_stat_io
        group by backend_type, object, context
        having sum(coalesce(reads, 0) + coalesce(writes, 0) + coalesce(extends, 0) + coalesce(hits, 0)) > 0
        order by sum(coalesce(reads, 0) + coalesce(writes, 0) + coalesce(extends, 0)) desc, 1, 2, 3
        limit %s
        """,
        [limit],
    )


# -- health --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: Status
    value: Any
    detail: str

    def as_dict(self) -> Row:
        return {"name": self.name, "status": self.status, "value": self.value, "detail": self.detail}


@dataclass
class Health:
    checks: list[Check]
    io: list[Row] = field(default_factory=list)
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    # the streaming replicas as this server sees them (`replication`), and as a gateway routes to them
    # (`gateway_routing`, when asked for)
    replicas: list[Row] = field(default_factory=list)
    routing: list[Row] = field(default_factory=list)

    @property
    def verdict(self) -> Status:
        worst: Status = "ok"
        for check in self.checks:
            if _RANK[check.status] > _RANK[worst]:
                worst = check.status
        return worst

    @property
    def exit_code(self) -> int:
        return _RANK[self.verdict]

    def as_dict(self) -> Row:
        return {
            "verdict": self.verdict,
            "checks": [check.as_dict() for check in self.checks],
            "io": self.io,
            "replicas": self.replicas,
            "routing": self.routing,
            "thresholds": dict(self.thresholds),
        }


def _grade(value: float | None, warn: float, critical: float, *, below: bool = False) -> Status:
    if value is None:
        return "ok"
    if below:
        return "critical" if value < critical else "warn" if value < warn else "ok"
    return "critical" if value >= critical else "warn" if value >= warn else "ok"


Probe = Callable[[psycopg.Connection[Row], Mapping[str, float]], Check]


def _safely(name: str, probe: Probe, conn: psycopg.Connection[Row], thresholds: Mapping[str, float]) -> Check:
    """A check that cannot run (a missing view, a timeout) warns instead of failing the whole report."""
    try:
        return probe(conn, thresholds)
    except (DbaError, psycopg.Error) as exc:
        return Check(name, "warn", None, f"could not check: {one_line(exc)}")


def _check_connections(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    row = _rows(
        conn,
        "select count(*) as used, current_setting('max_connections')::int as max,"
        " current_setting('superuser_reserved_connections')::int as reserved"
        " from pg_stat_activity where backend_type = 'client backend'",
    )[0]
    share = row["used"] / max(1, row["max"] - row["reserved"])
    status = _grade(share, t["connections_warn"], t["connections_critical"])
    return Check("connections", status, round(share, 3), f"{row['used']} of {row['max']} connections in use")


def _check_cache_hit(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    row = _rows(
        conn,
        "select blks_hit, blks_read,"
        " round(blks_hit::numeric / nullif(blks_hit + blks_read, 0), 4) as ratio"
        " from pg_stat_database where datname = current_database()",
    )[0]
    if (row["blks_hit"] + row["blks_read"]) < t["cache_hit_min_blocks"]:
        return Check("cache_hit_ratio", "ok", row["ratio"], "too few block accesses yet to judge")
    status = _grade(row["ratio"], t["cache_hit_warn"], t["cache_hit_critical"], below=True)
    return Check("cache_hit_ratio", status, row["ratio"], "share of block reads served by shared_buffers")


def _check_blocking(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    rows = blocking(conn)
    longest = max((row["wait_seconds"] or 0 for row in rows), default=0.0)
    if not rows:
        return Check("blocking", "ok", 0, "no session waits for a lock")
    status = _grade(longest, t["blocked_wait_warn"], t["blocked_wait_critical"])
    roots = sorted({row["blocking_pid"] for row in rows if row["blocking_is_root"]})
    return Check(
        "blocking",
        status,
        longest,
        f"{len({row['blocked_pid'] for row in rows})} blocked session(s), longest wait {longest:.1f} s;"
        f" blocked by pid {', '.join(map(str, roots)) or '?'}",
    )


def _check_idle_in_transaction(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    rows = [
        r for r in sessions(conn, running_seconds=1e9, idle_seconds=0) if r["kind"] == "idle_in_transaction"
    ]
    longest = max((row["state_seconds"] or 0 for row in rows), default=0.0)
    status = _grade(longest, t["idle_in_transaction_warn"], t["idle_in_transaction_critical"])
    worst = max(rows, key=lambda row: row["state_seconds"] or 0) if rows else None
    detail = f"longest {longest:.0f} s (pid {worst['pid']})" if worst else "none"
    return Check("idle_in_transaction", status, longest, detail)


def _check_long_running(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    rows = [r for r in sessions(conn, running_seconds=0, idle_seconds=1e9) if r["kind"] == "long_running"]
    longest = max((row["query_seconds"] or 0 for row in rows), default=0.0)
    status = _grade(longest, t["long_running_warn"], t["long_running_critical"])
    worst = max(rows, key=lambda row: row["query_seconds"] or 0) if rows else None
    detail = f"longest statement {longest:.0f} s (pid {worst['pid']})" if worst else "none"
    return Check("long_running", status, longest, detail)


def _check_xid_age(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    row = _rows(
        conn,
        "select datname, age(datfrozenxid) as age from pg_database order by age(datfrozenxid) desc limit 1",
    )[0]
    status = _grade(row["age"], t["xid_age_warn"], t["xid_age_critical"])
    return Check("xid_wraparound", status, row["age"], f"oldest unfrozen xid age in {row['datname']}")


def _check_bloat(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    rows = [r for r in bloat(conn, limit=5, thresholds=t) if "bloat_percent" in r]
    bad = [
        r
        for r in rows
        if r["bloat_percent"] >= t["bloat_warn_percent"] and r["table_bytes"] >= t["bloat_min_bytes"]
    ]
    sized = [r["bloat_percent"] for r in rows if r["table_bytes"] >= t["bloat_min_bytes"]]
    worst = max(sized, default=0.0)
    detail = ", ".join(f"{r['table_name']} {r['bloat_percent']:.0f}%" for r in bad) or (
        f"no table of {t['bloat_min_bytes'] / 1048576:.1f} MB or more is {t['bloat_warn_percent']:g}% bloated"
    )
    return Check("bloat", "warn" if bad else "ok", worst, detail)


def _check_indexes(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    report = index_report(conn)
    duplicates = report["duplicates"]
    unused = report["unused"]
    detail = f"{len(unused)} unused (informational)"
    if duplicates:
        names = "; ".join(", ".join(group["redundant"]) for group in duplicates)
        return Check("indexes", "warn", len(duplicates), f"duplicate indexes: {names}; {detail}")
    return Check("indexes", "ok", 0, f"no duplicates; {detail}")


def _check_archiver(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    row = _rows(
        conn,
        "select current_setting('archive_mode') as mode, archived_count, failed_count, last_failed_wal,"
        " last_failed_time, last_archived_time,"
        " coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) as failing"
        " from pg_stat_archiver",
    )[0]
    if row["mode"] == "off":
        return Check("wal_archiving", "ok", "off", "archive_mode is off (no point-in-time recovery)")
    if row["failing"]:
        return Check(
            "wal_archiving",
            "critical",
            row["failed_count"],
            f"archive_command fails on {row['last_failed_wal']}",
        )
    return Check("wal_archiving", "ok", row["archived_count"], f"last archived {row['last_archived_time']}")


def _check_replication_slots(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    rows = _rows(
        conn,
        "select slot_name, active, wal_status from pg_replication_slots"
        " where not active or wal_status = 'lost'",
    )
    if not rows:
        return Check("replication_slots", "ok", 0, "no inactive slot retains WAL")
    names = ", ".join(f"{r['slot_name']} ({r['wal_status']})" for r in rows)
    return Check("replication_slots", "warn", len(rows), f"inactive slots retain WAL: {names}")


def replication(conn: psycopg.Connection[Row]) -> list[Row]:
    """The standbys streaming from this server (pg_stat_replication): replay position, lag in bytes and in
    seconds (PostgreSQL's replay_lag; 0 when caught up, where it stops measuring), and their slot."""
    return _rows(
        conn,
        """
        select name, client, state, sync_state, replay_lsn, lag_bytes,
          coalesce(replay_lag, case when lag_bytes = 0 then 0 end) as lag_seconds, slot
        from (
          select r.pid, r.application_name as name, r.client_addr::text as client, r.state, r.sync_state,
            r.replay_lsn::text as replay_lsn,
            case when not pg_is_in_recovery()
              then pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint end as lag_bytes,
            extract(epoch from r.replay_lag)::float8 as replay_lag,
            s.slot_name as slot
          from pg_stat_replication as r
          left join pg_replication_slots as s on s.active_pid = r.pid
        ) as standby
        order by name, pid
        """,
    )


def _check_replication(conn: psycopg.Connection[Row], t: Mapping[str, float]) -> Check:
    rows = replication(conn)
    if not rows:
        return Check("replication", "ok", 0, "no standby streams from this server")
    worst = max(float(row["lag_seconds"] or 0) for row in rows)
    status = _grade(worst, t["replication_lag_warn"], t["replication_lag_critical"])
    if status == "ok" and any(row["state"] != "streaming" for row in rows):
        status = "warn"  # catching up, or starting
    detail = "; ".join(
        f"{row['name'] or row['client']}: {row['state']}, {row['lag_bytes']} bytes"
        + ("" if row["lag_seconds"] is None else f", {row['lag_seconds']:.1f} s")
        + " behind"
        for row in rows
    )
    return Check("replication", status, round(worst, 3), detail)


def gateway_routing(metrics_text: str) -> list[Row]:
    """A gateway's /metrics text -> its routing counts (commercecore_db_routed_total by target and reason)
    and its monitor's view of each replica (up, lag bytes and seconds)."""
    routed: list[Row] = []
    replicas: dict[str, Row] = {}
    gauges = {
        "commercecore_replica_up": "up",
        "commercecore_replica_lag_bytes": "lag_bytes",
        "commercecore_replica_lag_seconds": "lag_seconds",
    }
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "commercecore_db_routed_total":
                routed.append({**sample.labels, "requests": int(sample.value)})
            elif sample.name in gauges:
                name = sample.labels.get("replica", "")
                replicas.setdefault(name, {"target": name, "reason": "(monitor)"})[gauges[sample.name]] = (
                    sample.value
                )
    return sorted(routed, key=lambda r: (r["target"], r["reason"])) + list(replicas.values())


# the checks of `health`, in the order they are shown: (name, probe)
_PROBES: tuple[tuple[str, Probe], ...] = (
    ("connections", _check_connections),
    ("cache_hit_ratio", _check_cache_hit),
    ("blocking", _check_blocking),
    ("idle_in_transaction", _check_idle_in_transaction),
    ("long_running", _check_long_running),
    ("xid_wraparound", _check_xid_age),
    ("bloat", _check_bloat),
    ("indexes", _check_indexes),
    ("wal_archiving", _check_archiver),
    ("replication_slots", _check_replication_slots),
    ("replication", _check_replication),
)


def health(conn: psycopg.Connection[Row], thresholds: Mapping[str, float] | None = None) -> Health:
    """Every check with its status; the verdict is the worst of them."""
    t = {**THRESHOLDS, **(thresholds or {})}
    checks = [_safely(name, probe, conn, t) for name, probe in _PROBES]
    try:
        io = io_summary(conn)
    except psycopg.Error:
        io = []
    try:
        replicas = replication(conn)
    except psycopg.Error:
        replicas = []
    return Health(checks=checks, io=io, thresholds=t, replicas=replicas)


# -- audit ---------------------------------------------------------------------------------------------


def audit_tail(
    conn: psycopg.Connection[Row],
    *,
    table: str | None = None,
    actor: str | None = None,
    request_id: str | None = None,
    limit: int = 20,
) -> list[Row]:
    """audit.log, newest first; `table` matches `core.orders` or `orders`, `actor` a user id or a role.
    The owner reads the rows in full, anyone else (app_dba) with emails and Stripe ids masked."""
    _require(conn, "audit.log")
    where = ["true"]
    params: list[Any] = []
    if table:
        if "." in table:
            where.append("table_name = %s")
            params.append(table)
        else:
            where.append("split_part(table_name, '.', 2) = %s")
            params.append(table)
    if actor:
        if actor.isdigit():
            where.append("actor_user_id = %s")
            params.append(int(actor))
        else:
            where.append("actor_role = %s")
            params.append(actor)
    if request_id:
        where.append("request_id = %s")
        params.append(request_id)
    params.append(limit)
    query = f"""
        select id, at, actor_user_id, actor_role, request_id, table_name, operation, row_id,
               changed_columns as changed, old_row, new_row, transaction_id::text as transaction_id
        from audit.log
        where {" and ".join(where)}
        order by at desc, id desc
        limit %s
    """  # the where clauses are fixed texts; values are parameters
    return _rows(conn, query, params)
