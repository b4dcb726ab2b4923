"""A streaming replica of the embedded cluster: `commercecore pg replica start|stop|status`, `up --replica`,
and the test suite's replica.

`start` makes it once, with pg_basebackup from the running primary: `-R` writes the standby settings
(primary_conninfo, primary_slot_name, standby.signal), `-C -S` creates the physical replication slot that
keeps on the primary the WAL the replica has not received yet, and `-X stream` copies the WAL written during
the copy. It connects over the primary's Unix socket as the superuser, whose local connections are trusted:
no password is written into the copy. The copy gets a port and socket directory of its own and no WAL
archiving (promoted, it would add its timeline to the primary's archive), then starts as the primary does:
as root, as the same service user, in places that user owns (commercecore.local.service_user).

`stop` shuts it down (fast) and keeps its data and slot: the slot keeps WAL on the primary until the
replica is back. `stop --remove` also drops the slot and deletes the copy.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from commercecore.local import embedded, service_user

DEFAULT_PORT = 54330
DEFAULT_SLOT = "commercecore_replica"
PORT_ENV = "COMMERCECORE_REPLICA_PORT"
DATA_DIR_NAME = "replica"
CONF = "commercecore.conf"
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
# what the copy must not take over from the primary's own settings
_OWN_SETTINGS = ("port", "unix_socket_directories", "archive_mode", "archive_command")
# a read replica of short API reads: vacuum on the primary keeps the rows they read rather than cancelling
# them (a cancelled read would be retried on the primary)
REPLICA_SETTINGS: dict[str, str] = {"hot_standby": "on", "hot_standby_feedback": "on", "archive_mode": "off"}
SLOT_RELEASE_TIMEOUT = 30.0


class ReplicaError(embedded.EmbeddedError):
    """The replica could not be made, started, stopped or read; the message says why."""


@dataclass(frozen=True)
class ReplicaStatus:
    """What `commercecore pg replica status` shows."""

    pid: int | None
    port: int
    data_dir: Path
    slot: str
    slot_active: bool | None = None  # None: no such slot (or the primary is down)
    slot_retained_bytes: int | None = None
    receive_lsn: str | None = None
    replay_lsn: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    paused: bool | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class Replica:
    """A streaming replica (`cluster`, its data directory and port) of `primary`, through `slot`."""

    primary: embedded.Cluster
    cluster: embedded.Cluster
    slot: str = DEFAULT_SLOT

    def __post_init__(self) -> None:
        if not _SLOT_NAME.fullmatch(self.slot):
            raise ReplicaError(f"slot {self.slot!r}: use lower-case letters, digits and _ (at most 63)")

    @property
    def source(self) -> str:
        """libpq parameters of the primary: its socket, as its superuser (trusted locally, no password)."""
        return make_conninfo(
            host=str(self.primary.server_data_dir),
            port=self.primary.port,
            user=embedded.SUPERUSER,
            dbname="postgres",
            application_name=self.slot,
        )

    def start(self, extra: Mapping[str, str] | None = None) -> None:
        """Make the replica if it does not exist yet (`extra`: more settings for it), then start it."""
        self.create(extra)
        if self.cluster.status() is None:
            self.cluster.start()

    def create(self, extra: Mapping[str, str] | None = None) -> None:
        """pg_basebackup of the running primary into the data directory, set up as a standby of it; on a
        failure nothing is left behind (neither files nor the slot)."""
        if self.cluster.is_initialized():
            return
        if self.primary.status() is None:
            raise ReplicaError(
                f"the primary ({self.primary.data_dir}) is not running: `commercecore pg start` first"
            )
        existed = self.cluster.data_dir.exists()
        data = self.cluster.prepare_data_dir()
        try:
            self._base_backup(data)
            self._configure(data, extra or {})
        except BaseException:
            self._discard(data, keep_directory=existed)
            raise

    def _base_backup(self, data: Path) -> None:
        self.cluster._run(  # as the service user: the files are its own from the start
            "pg_basebackup",
            f"--pgdata={data}",
            f"--dbname={self.source}",
            "--write-recovery-conf",
            "--create-slot",
            f"--slot={self.slot}",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-password",
        )

    def _configure(self, data: Path, extra: Mapping[str, str]) -> None:
        """The copy's own port, socket directory and replica settings, in its commercecore.conf (the
        primary's, copied, minus what is the primary's own); the superuser's password file beside it."""
        self._connect_as_given(data)
        conf = data / CONF
        kept = [
            line
            for line in (conf.read_text().splitlines() if conf.exists() else [])
            if line.partition("=")[0].strip() not in {*_OWN_SETTINGS, *REPLICA_SETTINGS, *extra}
        ]
        own = {
            **REPLICA_SETTINGS,
            **extra,
            "port": str(self.cluster.port),
            "unix_socket_directories": embedded.conf_quote(str(data)),
        }
        lines = [*kept, f"# a streaming replica of {self.primary.data_dir} (commercecore pg replica)"]
        conf.write_text("\n".join([*lines, *(f"{key} = {value}" for key, value in own.items())]) + "\n")
        main_conf = data / "postgresql.conf"
        if "include_if_exists = 'commercecore.conf'" not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write("\ninclude_if_exists = 'commercecore.conf'\n")
        if self.primary.password_file.exists():
            shutil.copy2(self.primary.password_file, self.cluster.password_file)
            self.cluster.password_file.chmod(0o600)
        self.cluster._own(data)

    def _connect_as_given(self, data: Path) -> None:
        """primary_conninfo as `source` says, no more: -R writes every libpq default it resolved, among them
        the password file of whoever ran it (root's home, as root), which the server's user cannot read."""
        auto = data / "postgresql.auto.conf"
        lines = [
            f"primary_conninfo = {embedded.conf_quote(self.source)}"
            if line.startswith("primary_conninfo")
            else line
            for line in auto.read_text().splitlines()
        ]
        auto.write_text("\n".join(lines) + "\n")

    def _discard(self, data: Path, *, keep_directory: bool) -> None:
        """After a failed creation: the copied files, and the slot pg_basebackup may have created."""
        for child in data.iterdir() if data.exists() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        if not keep_directory:
            service_user.remove_placed(self.cluster.data_dir)
        if self.primary.status() is not None:
            self.drop_slot()

    def stop(self, *, remove: bool = False) -> None:
        """Fast shutdown; with `remove`, also the slot on the primary (which must run) and the data."""
        self.cluster.stop()
        if not remove:
            return
        if self.primary.status() is None:
            raise ReplicaError(
                f"the primary is not running, so slot {self.slot} cannot be dropped: start it "
                "(`commercecore pg start`) and run `commercecore pg replica stop --remove` again"
            )
        self.drop_slot()
        service_user.remove_placed(self.cluster.data_dir)
        self.cluster.password_file.unlink(missing_ok=True)

    def drop_slot(self) -> bool:
        """Drops the slot once no walsender holds it (a replica just stopped lets go within moments);
        False when there was none."""
        deadline = time.monotonic() + SLOT_RELEASE_TIMEOUT
        with psycopg.connect(self.primary.url("postgres"), autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "select active_pid from pg_catalog.pg_replication_slots where slot_name = %s", [self.slot]
                ).fetchone()
                if row is None:
                    return False
                if row[0] is None:
                    conn.execute("select pg_catalog.pg_drop_replication_slot(%s)", [self.slot])
                    return True
                if time.monotonic() > deadline:
                    raise ReplicaError(
                        f"slot {self.slot} is still in use by pid {row[0]}: is a replica running?"
                    )
                time.sleep(0.1)

    def status(self) -> ReplicaStatus:
        """Whether it runs, where it has got to and how far behind the primary it is."""
        pid = self.cluster.status()
        found: dict[str, Any] = {}
        if self.primary.status() is not None:
            found |= _primary_side(self.primary, self.slot)
        if pid is not None:
            found |= _replica_side(self.cluster)
        primary_lsn = found.pop("primary_lsn", None)
        replay_age = found.pop("replay_age", None)
        replay = found.get("replay_lsn")
        if primary_lsn is not None and replay is not None:
            behind = max(0, _lsn(primary_lsn) - _lsn(replay))
            found["lag_bytes"] = behind
            found["lag_seconds"] = 0.0 if behind == 0 else replay_age
        return ReplicaStatus(pid, self.cluster.port, self.cluster.data_dir, self.slot, **found)


def _primary_side(primary: embedded.Cluster, slot: str) -> dict[str, Any]:
    with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "select pg_catalog.pg_current_wal_lsn()::text, s.active,"
            " pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint"
            " from (select) as one"
            " left join pg_catalog.pg_replication_slots as s on s.slot_name = %s",
            [slot],
        ).fetchone()
    assert row is not None
    return {"primary_lsn": row[0], "slot_active": row[1], "slot_retained_bytes": row[2]}


def _replica_side(cluster: embedded.Cluster) -> dict[str, Any]:
    with psycopg.connect(cluster.url("postgres"), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "select pg_catalog.pg_last_wal_receive_lsn()::text, pg_catalog.pg_last_wal_replay_lsn()::text,"
            " pg_catalog.pg_is_wal_replay_paused(),"
            " extract(epoch from pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())::float8"
        ).fetchone()
    assert row is not None
    return {"receive_lsn": row[0], "replay_lsn": row[1], "paused": row[2], "replay_age": row[3]}


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def _conf_value(data_dir: Path, name: str, file: str = CONF) -> str | None:
    """A setting's value as a configuration file of the data directory writes it (quotes removed)."""
    path = data_dir / file
    if not path.exists():
        return None
    found = None
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            found = value.strip().strip("'")
    return found


def default_replica(port: int | None = None, slot: str | None = None) -> Replica:
    """The replica of the project's cluster: `.data/replica` beside `.data/pg`. Its port: `port`, else
    COMMERCECORE_REPLICA_PORT, else the one it was made with, else 54330; its slot: `slot`, else the one it
    was made with, else commercecore_replica."""
    primary = embedded.default_cluster()
    data_dir = primary.data_dir.parent / DATA_DIR_NAME
    if port is None:
        made_with = _conf_value(data_dir, "port")
        port = int(os.environ.get(PORT_ENV) or made_with or DEFAULT_PORT)
    if slot is None:
        slot = _conf_value(data_dir, "primary_slot_name", "postgresql.auto.conf") or DEFAULT_SLOT
    return Replica(primary, embedded.Cluster(data_dir=data_dir, port=port), slot)
