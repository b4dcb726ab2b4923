"""Physical backups and point-in-time recovery of the embedded cluster.

`base_backup` runs pg_basebackup (tar or plain, WAL streamed into the backup, SHA-256 manifest) and
verifies the result with pg_verifybackup; `commercecore-backup.json` beside the files records what the
manifest does not (server clock at start, the WAL archive, the source). `pitr_restore` materialises a
backup into a new data directory, points `restore_command` at the WAL archive, sets the recovery target
(time or LSN, `recovery_target_action = promote`), starts the copy on a free port, waits for recovery to
end and reports where it stopped. It never writes to the live data directory, and the copy does not
archive (it would mix a new timeline into the live cluster's archive).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from commercecore.local import embedded, service_user
from commercecore.ops.backup import check_client, client_program, run_program
from commercecore.ops.target import OpsError, Target

METADATA = "commercecore-backup.json"
MANIFEST = "backup_manifest"
FORMATS = ("tar", "plain")
_LSN_RE = re.compile(r"\A[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}\Z")


class PitrError(OpsError):
    """A physical backup or point-in-time restore failed or was refused."""


def parse_lsn(text: str) -> int:
    if not _LSN_RE.match(text.strip()):
        raise PitrError(f"{text!r} is not a WAL location (LSN), e.g. 0/3000148")
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse_target_time(text: str) -> datetime:
    """An ISO timestamp with its UTC offset (a bare time would be read in the restored server's zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PitrError(f"{text!r} is not a timestamp; use e.g. '2026-11-24 15:04:05+00'") from None
    if moment.tzinfo is None:
        raise PitrError(f"{text!r} has no UTC offset; write it with one, e.g. '{text.strip()}+00'")
    return moment


# -- base backups --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseBackup:
    directory: Path
    format: str
    timeline: int
    start_lsn: str
    end_lsn: str
    started_at: str  # the server's clock when the backup started
    finished_at: str
    archive: str | None
    source: str
    server_version: str
    source_password_file: str | None
    size: int
    seconds: float
    warnings: tuple[str, ...] = ()

    def save(self) -> None:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        data["warnings"] = list(self.warnings)
        (self.directory / METADATA).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> BaseBackup | None:
        path = directory / METADATA
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        data["directory"] = directory
        data["warnings"] = tuple(data.get("warnings", ()))
        return cls(**data)


def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        raise PitrError(f"{directory} has no {MANIFEST}: not a pg_basebackup backup (or an incomplete one)")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise PitrError(f"{path} is not valid JSON: {exc}") from None
    return data


def _wal_range(manifest: dict[str, Any]) -> tuple[int, str, str]:
    ranges = manifest.get("WAL-Ranges") or []
    if not ranges:
        raise PitrError("the backup manifest has no WAL range")
    last = ranges[-1]
    return int(last["Timeline"]), str(ranges[0]["Start-LSN"]), str(last["End-LSN"])


def backup_format(directory: Path) -> str:
    return "tar" if any(directory.glob("base.tar*")) else "plain"


def verify_base_backup(directory: Path) -> None:
    """pg_verifybackup: every file against the manifest, and the WAL the backup needs (tar: pg_waldump)."""
    if not directory.is_dir():
        raise PitrError(f"{directory}: no such backup directory")
    manifest = _manifest(directory)
    verify = client_program("pg_verifybackup")
    if backup_format(directory) == "plain":
        run_program([verify, "--quiet", f"--ignore={METADATA}", str(directory)], what="pg_verifybackup")
        return
    run_program(
        [verify, "--quiet", "--no-parse-wal", f"--ignore={METADATA}", str(directory)], what="pg_verifybackup"
    )
    timeline, start, end = _wal_range(manifest)
    wal_tars = list(directory.glob("pg_wal.tar*"))
    if not wal_tars:
        raise PitrError(f"{directory} has no pg_wal.tar: the backup lacks the WAL it needs to be consistent")
    with tempfile.TemporaryDirectory(prefix="cc-verify-wal-") as scratch:
        with tarfile.open(wal_tars[0], "r:*") as archive:
            archive.extractall(scratch, filter="data")
        run_program(
            [
                client_program("pg_waldump"),
                "--quiet",
                f"--path={scratch}",
                f"--timeline={timeline}",
                f"--start={start}",
                f"--end={end}",
            ],
            what="pg_waldump (checking the backup's WAL)",
        )


def _tree_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def base_backup(
    url: str,
    parent: Path,
    *,
    fmt: str = "tar",
    archive: Path | None = None,
    password_file: Path | None = None,
    now: datetime | None = None,
) -> BaseBackup:
    """pg_basebackup of the URL's server into `parent/base_<stamp>`, verified; see the module docstring."""
    if fmt not in FORMATS:
        raise PitrError(f"format {fmt!r}: use tar or plain")
    target = Target.from_url(url)
    started = time.monotonic()
    source = _backup_source(target)
    pg_basebackup = check_client("pg_basebackup", source.version_num)
    stamp = (now or datetime.now().astimezone()).strftime("%Y%m%d_%H%M%S")
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = parent / f"base_{stamp}"
    if directory.exists():
        raise PitrError(f"{directory} exists already")
    _run_basebackup(target, pg_basebackup, directory, fmt, stamp)
    timeline, start_lsn, end_lsn = _wal_range(_manifest(directory))
    with target.connect(autocommit=True) as conn:
        finished = conn.execute("select clock_timestamp()").fetchone()
    assert finished is not None
    result = BaseBackup(
        directory=directory,
        format=fmt,
        timeline=timeline,
        start_lsn=start_lsn,
        end_lsn=end_lsn,
        started_at=source.started_at.isoformat(),
        finished_at=finished[0].isoformat(),
        archive=None if archive is None else str(archive.resolve()),
        source=target.display,
        server_version=source.server_version,
        source_password_file=None if password_file is None else str(password_file.resolve()),
        size=_tree_size(directory),
        seconds=time.monotonic() - started,
        warnings=source.warnings,
    )
    result.save()
    return result


@dataclass(frozen=True)
class _Source:
    """The server a base backup is taken of, as it was when the backup started."""

    started_at: datetime
    server_version: str
    version_num: int
    warnings: tuple[str, ...]


def _backup_source(target: Target) -> _Source:
    """Refuses a server that cannot give a base backup; warns when the backup cannot serve PITR."""
    with target.connect(autocommit=True) as conn:
        row = conn.execute(
            "select current_setting('archive_mode'), current_setting('wal_level'),"
            " current_setting('server_version'), clock_timestamp(),"
            " (select rolsuper or rolreplication from pg_roles where rolname = current_user)"
        ).fetchone()
        assert row is not None
        archive_mode, wal_level, server_version, server_now, may_replicate = row
        version_num = int(conn.info.server_version)
    if wal_level == "minimal":
        raise PitrError("wal_level is minimal: base backups need wal_level = replica")
    if not may_replicate:
        raise PitrError(f"the role of {target.display} has no REPLICATION privilege")
    warnings: tuple[str, ...] = ()
    if archive_mode == "off":
        warnings = (
            "WAL archiving is off on this server: the backup restores to its own end only, not to a later "
            "point in time (set archive_mode and archive_command, then restart)",
        )
    return _Source(server_now, str(server_version), version_num, warnings)


def _run_basebackup(target: Target, pg_basebackup: Path, directory: Path, fmt: str, stamp: str) -> None:
    """pg_basebackup into `directory`, verified; nothing is left behind when either fails."""
    try:
        run_program(
            [
                pg_basebackup,
                f"--dbname={target.conninfo}",
                f"--pgdata={directory}",
                f"--format={fmt[0]}",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--manifest-checksums=SHA256",
                f"--label=commercecore {stamp}",
                "--no-password",
            ],
            env=target.env(),
            what="pg_basebackup",
        )
        verify_base_backup(directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def wait_for_archive(url: str, timeout: float = 60.0) -> str:
    """Switch to a new WAL segment and wait until the previous one is in the archive; returns its name."""
    target = Target.from_url(url)
    with target.connect(autocommit=True) as conn:
        row = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        walfile = str(row[0])
        deadline = time.monotonic() + timeout
        while True:
            state = conn.execute(
                "select last_archived_wal, failed_count, last_failed_wal from pg_stat_archiver"
            ).fetchone()
            assert state is not None
            if state[0] is not None and str(state[0])[:24] >= walfile:
                return walfile
            if time.monotonic() > deadline:
                failing = f"; archive_command fails on {state[2]}" if state[1] else ""
                raise PitrError(f"WAL segment {walfile} not archived within {timeout:g} s{failing}")
            time.sleep(0.1)


# -- point-in-time restore -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PitrResult:
    cluster: embedded.Cluster
    target: str
    replay_lsn: str | None
    last_transaction_at: str | None
    timeline: int
    stop_reason: str | None
    seconds: float

    @property
    def socket_url(self) -> str:
        return f"postgresql://{embedded.SUPERUSER}@/postgres?host={self.cluster.socket_dir}&port={self.cluster.port}"


def restore_command(archive: Path) -> str:
    quoted = shlex.quote(str(archive))
    return f"cp {quoted}/%f %p"


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _materialise(backup: Path, into: Path) -> None:
    if backup_format(backup) == "plain":
        shutil.copytree(
            backup, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns(METADATA), symlinks=True
        )
        return
    extra = [p.name for p in backup.glob("*.tar*") if not p.name.startswith(("base.tar", "pg_wal.tar"))]
    if extra:
        raise PitrError(f"the backup has tablespace archives ({', '.join(extra)}): not supported here")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(next(backup.glob("base.tar*")), "r:*") as archive:
        archive.extractall(into, filter="data")
    (into / "pg_wal").mkdir(exist_ok=True)
    for wal_tar in backup.glob("pg_wal.tar*"):
        with tarfile.open(wal_tar, "r:*") as archive:
            archive.extractall(into / "pg_wal", filter="data")
    shutil.copy2(backup / MANIFEST, into / MANIFEST)


def _recovery_settings(into: Path, port: int, archive: Path, target: tuple[str, str]) -> str:
    key, value = target
    settings = {
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": embedded.conf_quote(str(into)),
        # a restored copy must not add its new timeline to the live cluster's archive
        "archive_mode": "off",
        "restore_command": embedded.conf_quote(restore_command(archive)),
        key: embedded.conf_quote(value),
        "recovery_target_action": "'promote'",
        "recovery_target_inclusive": "on",
    }
    lines = "\n".join(f"{name} = {setting}" for name, setting in settings.items())
    return f"\n# commercecore db pitr-restore: a copy recovered to {key} {value}\n{lines}\n"


def _log_tail(cluster: embedded.Cluster, lines: int = 40) -> list[str]:
    try:
        return cluster.log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _log_reason(cluster: embedded.Cluster) -> str:
    tail = _log_tail(cluster)
    fatal = [line for line in tail if "FATAL" in line or "PANIC" in line]
    picked = fatal[-1] if fatal else (tail[-1] if tail else "no log")
    hint = ""
    if "before configured recovery target" in picked:
        hint = " (the archive ends before the target: pick an earlier time, or archive more WAL first)"
    elif "before consistent recovery point" in picked:
        hint = " (the target lies inside the base backup: pick a later target or an older backup)"
    return picked.split("FATAL:", 1)[-1].strip() + hint


def _stop_line(cluster: embedded.Cluster) -> str | None:
    """What the server logged about where recovery stopped (`recovery stopping before commit of ...`)."""
    found: list[str] = []
    for key in ("recovery stopping", "last completed transaction"):
        for line in reversed(_log_tail(cluster, 200)):
            if key in line:
                found.append(line.split("LOG:", 1)[-1].strip())
                break
    return "; ".join(found) or None


def pitr_restore(
    backup: Path,
    into: Path,
    *,
    target_time: str | None = None,
    target_lsn: str | None = None,
    archive: Path | None = None,
    port: int | None = None,
    live_data_dir: Path | None = None,
    timeout: float = 300.0,
) -> PitrResult:
    """Recover a copy of `backup` into the new data directory `into`, to a time or LSN; leaves it running."""
    started = time.monotonic()
    if (target_time is None) == (target_lsn is None):
        raise PitrError("give exactly one recovery target: --to TIMESTAMP or --to-lsn LSN")
    backup = backup.resolve()
    into = into.resolve()
    meta = BaseBackup.load(backup)
    recovery_target = _recovery_target(backup, meta, target_time, target_lsn)
    archive = _wal_archive(archive, meta)
    _check_new_directory(into, backup, archive, live_data_dir)
    verify_base_backup(backup)

    cluster = embedded.Cluster(data_dir=into, port=port or embedded.free_port())
    if cluster._port_taken():
        raise PitrError(f"port {cluster.port} on 127.0.0.1 is in use")
    server_dir, log = _prepare_copy(cluster, backup, archive, recovery_target, meta)
    proc = cluster._run("pg_ctl", "-D", str(server_dir), "-l", str(log), "-W", "start", check=False)
    if proc.returncode != 0:
        raise PitrError(f"pg_ctl start failed: {proc.stderr.strip() or _log_reason(cluster)}")
    replay_lsn, last_xact, walfile = _wait_for_promotion(cluster, timeout)
    return PitrResult(
        cluster=cluster,
        target=f"{recovery_target[0]} = {recovery_target[1]}",
        replay_lsn=None if replay_lsn is None else str(replay_lsn),
        last_transaction_at=None if last_xact is None else last_xact.isoformat(),
        timeline=int(str(walfile)[:8], 16),
        stop_reason=_stop_line(cluster),
        seconds=time.monotonic() - started,
    )


def _recovery_target(
    backup: Path, meta: BaseBackup | None, target_time: str | None, target_lsn: str | None
) -> tuple[str, str]:
    """The recovery_target_* setting and its value; a target before the backup is consistent is refused."""
    _timeline, _start, end_lsn = _wal_range(_manifest(backup))
    if target_time is not None:
        moment = parse_target_time(target_time)
        if meta is not None and moment < datetime.fromisoformat(meta.started_at):
            raise PitrError(
                f"{target_time} is before the base backup started ({meta.started_at}): "
                "use an older base backup"
            )
        return ("recovery_target_time", moment.isoformat(sep=" "))
    assert target_lsn is not None
    if parse_lsn(target_lsn) < parse_lsn(end_lsn):
        raise PitrError(
            f"{target_lsn} is before the end of the base backup ({end_lsn}), where it becomes "
            "consistent: pick a later LSN or an older backup"
        )
    return ("recovery_target_lsn", target_lsn.strip())


def _wal_archive(archive: Path | None, meta: BaseBackup | None) -> Path:
    """The archive given, else the one the backup recorded."""
    if archive is None and meta is not None and meta.archive:
        archive = Path(meta.archive)
    if archive is None:
        raise PitrError("the backup does not say where its WAL archive is: pass --archive DIR")
    archive = archive.resolve()
    if not archive.is_dir():
        raise PitrError(f"WAL archive {archive}: no such directory")
    return archive


def _check_new_directory(into: Path, backup: Path, archive: Path, live_data_dir: Path | None) -> None:
    """A restore goes into a new or empty directory, apart from the live cluster, backup and archive."""
    if live_data_dir is not None:
        live = live_data_dir.resolve()
        if _is_within(into, live) or _is_within(live, into):
            raise PitrError(f"{into} overlaps the live data directory {live}: restore into a new directory")
    if _is_within(into, backup) or _is_within(backup, into) or _is_within(into, archive):
        raise PitrError(f"{into} overlaps the backup or the WAL archive: restore into a new directory")
    if into.exists() and any(into.iterdir()):
        raise PitrError(f"{into} exists and is not empty: restore into a new directory")


def _prepare_copy(
    cluster: embedded.Cluster,
    backup: Path,
    archive: Path,
    recovery_target: tuple[str, str],
    meta: BaseBackup | None,
) -> tuple[Path, Path]:
    """The backup's files in the cluster's data directory, set to recover; returns it and the log file.
    A directory this made is removed again when something fails."""
    into = cluster.data_dir
    created = not into.exists()
    try:
        server_dir = cluster.prepare_data_dir()
        _materialise(backup, server_dir)
        with (server_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(_recovery_settings(server_dir, cluster.port, archive, recovery_target))
        (server_dir / "recovery.signal").touch()
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (server_dir / stale).unlink(missing_ok=True)
        if meta is not None and meta.source_password_file and Path(meta.source_password_file).exists():
            shutil.copy2(meta.source_password_file, cluster.password_file)
            cluster.password_file.chmod(0o600)
        cluster._own(server_dir)
        return server_dir, cluster.prepare_log()
    except BaseException:
        if created:
            service_user.remove_placed(into)  # a restore target made by this run
        raise


def _wait_for_promotion(cluster: embedded.Cluster, timeout: float) -> tuple[Any, ...]:
    """Polls the restored server until recovery has ended (promoted) or it died; returns its position."""
    deadline = time.monotonic() + timeout
    conninfo = f"host={cluster.socket_dir} port={cluster.port} user={embedded.SUPERUSER} dbname=postgres"
    while True:
        if cluster.status() is None and not (cluster.data_dir / "postmaster.pid").exists():
            raise PitrError(f"the restored server stopped during recovery: {_log_reason(cluster)}")
        try:
            with psycopg.connect(conninfo, connect_timeout=5, autocommit=True) as conn:
                state = conn.execute("select pg_is_in_recovery()").fetchone()
                if state is not None and not state[0]:
                    row = conn.execute(
                        "select pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp(),"
                        " pg_walfile_name(pg_current_wal_insert_lsn())"
                    ).fetchone()
                    assert row is not None
                    return tuple(row)
        except psycopg.OperationalError:
            pass  # starting up, or not accepting connections before it is consistent
        if time.monotonic() > deadline:
            raise PitrError(
                f"recovery did not finish within {timeout:g} s; the server keeps running on port "
                f"{cluster.port} (log: {cluster.log_file})"
            )
        time.sleep(0.2)
