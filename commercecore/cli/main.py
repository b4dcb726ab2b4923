"""`commercecore`: the command line of the project (server, embedded PostgreSQL, deployments)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import psycopg

from commercecore.cli.common import err, fail
from commercecore.cli.db import db
from commercecore.cli.ops import register as register_dba_commands
from commercecore.cli.payments import payments
from commercecore.cli.users import users
from commercecore.local import embedded
from commercecore.local import replica as local_replica


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CommerceCore DBX: a database-first e-commerce backend."""


main.add_command(db)
main.add_command(payments)
main.add_command(users)
register_dba_commands(main, db)


# -- embedded PostgreSQL ---------------------------------------------------------------------------


@main.group()
def pg() -> None:
    """The embedded PostgreSQL cluster under .data/pg (unused when DATABASE_URL is set)."""


@pg.command("start")
def pg_start() -> None:
    """Initialise (first time) and start the cluster, and create the `commercecore` database."""
    try:
        cluster = embedded.start_default()
    except embedded.EmbeddedError as exc:
        fail(exc)
    click.echo(f"PostgreSQL running on 127.0.0.1:{cluster.port}, data in {cluster.data_dir}")


@pg.command("stop")
def pg_stop() -> None:
    """Stop the cluster (fast shutdown: open transactions are rolled back)."""
    cluster = embedded.default_cluster()
    try:
        cluster.stop()
    except embedded.EmbeddedError as exc:
        fail(exc)
    click.echo("PostgreSQL stopped")


@pg.command("status")
def pg_status() -> None:
    """Say whether the cluster runs; exit 3 when it does not (as pg_ctl status does)."""
    cluster = embedded.default_cluster()
    pid = cluster.status()
    if pid is None:
        state = "not initialised" if not cluster.is_initialized() else "stopped"
        click.echo(f"PostgreSQL {state} ({cluster.data_dir})")
        sys.exit(3)
    click.echo(f"PostgreSQL running: pid {pid}, 127.0.0.1:{cluster.port}, data in {cluster.data_dir}")


# The seed's monitoring SQL is typed without schemas (`select * from pg_stat_statements`,
# `pgstattuple('orders')`): the views and extensions live in ops, the tables in core. A schema the role may
# not use is skipped by PostgreSQL, so the path widens no privilege.
READING_SEARCH_PATH = '"$user",public,ops,core'


def psql_options(existing: str | None, role: str | None) -> str:
    """PGOPTIONS for `pg psql`: the reading search path (and a role), after any options already set."""
    options = [existing] if existing else []
    if role:
        options.append(f"-c role={role}")
    options.append(f"-c search_path={READING_SEARCH_PATH}")
    return " ".join(options)


@pg.command("psql", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--role",
    metavar="ROLE",
    help="Read as this role (SET ROLE at connection), e.g. app_dba or app_admin.",
)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def pg_psql(role: str | None, psql_args: tuple[str, ...]) -> None:
    """psql (PostgreSQL 18, from the wheel) on the project database; extra arguments go to psql.

    The search path reaches ops and core, so the monitoring views and extensions answer by their bare
    names (`select * from pg_stat_statements`, `select * from pgstattuple('orders')`).
    """
    try:
        url = embedded.admin_url()
    except embedded.EmbeddedError as exc:
        fail(exc)
    if role is not None and not re.fullmatch(r"[a-z_][a-z0-9_]*", role):
        fail(f"--role {role!r}: a role name of lowercase letters, digits and underscores")
    os.environ["PGOPTIONS"] = psql_options(os.environ.get("PGOPTIONS"), role)
    psql = str(embedded.pg_bin("psql"))
    os.execv(psql, [psql, url, *psql_args])  # noqa: S606 - psql replaces this process, as `exec psql` would


@pg.group("replica")
def pg_replica() -> None:
    """A streaming replica of the embedded cluster under .data/replica (port 54330), for reads."""


@pg_replica.command("start")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help=f"Its port (default: ${local_replica.PORT_ENV}, else the one it was made with, else "
    f"{local_replica.DEFAULT_PORT}).",
)
@click.option("--slot", help=f"Its replication slot on the primary (default {local_replica.DEFAULT_SLOT}).")
def pg_replica_start(port: int | None, slot: str | None) -> None:
    """Make the replica (first time: pg_basebackup -R with a replication slot) and start it; the cluster
    is started first when it does not run."""
    try:
        embedded.start_default()
        replica = local_replica.default_replica(port, slot)
        replica.start()
    except (embedded.EmbeddedError, psycopg.Error) as exc:
        fail(exc)
    click.echo(
        f"replica running on 127.0.0.1:{replica.cluster.port}, streaming from"
        f" 127.0.0.1:{replica.primary.port} through slot {replica.slot}; data in {replica.cluster.data_dir}"
    )


@pg_replica.command("stop")
@click.option("--remove", is_flag=True, help="Also drop its replication slot on the primary and delete it.")
def pg_replica_stop(remove: bool) -> None:
    """Stop the replica (fast shutdown); its slot keeps WAL on the primary until it is back, or --remove."""
    try:
        replica = local_replica.default_replica()
        replica.stop(remove=remove)
    except (embedded.EmbeddedError, psycopg.Error) as exc:
        fail(exc)
    click.echo(f"replica stopped{'; slot ' + replica.slot + ' dropped and data deleted' if remove else ''}")


@pg_replica.command("status")
def pg_replica_status() -> None:
    """Whether the replica runs, its replay position and lag; exit 3 when it does not run."""
    replica = local_replica.default_replica()
    try:
        status = replica.status()
    except (embedded.EmbeddedError, psycopg.Error) as exc:
        fail(exc)
    slot = "absent" if status.slot_active is None else "active" if status.slot_active else "inactive"
    retained = status.slot_retained_bytes
    slot_line = f"slot {status.slot}: {slot}" + (f", retains {retained} bytes of WAL" if retained else "")
    if not status.running:
        click.echo(f"replica stopped ({status.data_dir}); {slot_line}")
        sys.exit(3)
    lag = "unknown" if status.lag_bytes is None else f"{status.lag_bytes} bytes"
    seconds = "" if status.lag_seconds is None else f", {status.lag_seconds:.3f} s"
    click.echo(
        f"replica running: pid {status.pid}, 127.0.0.1:{status.port}, data in {status.data_dir}\n"
        f"received {status.receive_lsn}, replayed {status.replay_lsn}"
        f"{' (replay paused)' if status.paused else ''}; lag {lag}{seconds}\n{slot_line}"
    )


# -- demo data -------------------------------------------------------------------------------------


@main.group()
def demo() -> None:
    """Demo data for trying the API and for benchmarks."""


@demo.command("seed")
@click.option(
    "--products", default=0, show_default=True, type=click.IntRange(min=0), help="Also generate N products."
)
@click.option("--force", is_flag=True, help="Seed a server other than the embedded cluster too.")
def demo_seed(products: int, force: bool) -> None:
    """Load the demo catalog and users (idempotent), and optionally N generated products (COPY)."""
    from rich.progress import Progress

    from commercecore.local import seed

    try:
        url = embedded.admin_url()
        seed.require_embedded(url, force)
        added = seed.seed_demo(url)
        click.echo(f"demo catalog: {added['products']} products and {added['users']} users added")
        if products:
            with Progress(console=err) as progress:
                task = progress.add_task("generating products", total=products)
                seed.generate_products(url, products, progress=lambda n: progress.advance(task, n))
            click.echo(f"generated {products} products")
    except (embedded.EmbeddedError, seed.NotEmbedded, psycopg.Error) as exc:
        fail(exc)


# -- the gateway -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """Several workers share their metrics through files (prometheus-client's multiprocess mode): a fresh
    directory for this run, or PROMETHEUS_MULTIPROC_DIR emptied of an earlier run's files."""
    if workers <= 1:
        yield
        return
    from gateway.metrics import MULTIPROCESS_DIR

    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
        return
    with tempfile.TemporaryDirectory(prefix="commercecore-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory
        try:
            yield
        finally:
            os.environ.pop(MULTIPROCESS_DIR, None)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP gateway (uvicorn); settings from the environment (DATABASE_URL, COMMERCECORE_*).
    Proxies whose X-Forwarded-For is believed: COMMERCECORE_TRUSTED_PROXIES."""
    import uvicorn

    from gateway import logs
    from gateway.guard import UnsafeLogin, check_url
    from gateway.payments.config import PaymentSettings
    from gateway.server import PROTOCOL
    from gateway.settings import Settings, SettingsError

    # refuse a missing or weak secret, or a superuser login, here, with one line, before any worker starts
    try:
        settings = Settings.from_env()
        PaymentSettings.from_env()
        for url in (settings.database_url, *settings.replicas.urls):
            check_url(url, settings.pool_timeout)
    except (SettingsError, UnsafeLogin) as exc:
        fail(exc)
    logs.configure()
    with _metrics_directory(workers):
        uvicorn.run(
            "gateway.app:create_served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,  # the gateway writes its own JSON access log (gateway/logs.py)
            server_header=False,
            # the URL and header limits applied while a request arrives (gateway/server.py)
            http=PROTOCOL,
            # the app reads X-Forwarded-For itself, from COMMERCECORE_TRUSTED_PROXIES only (gateway.app);
            # uvicorn's own handling would believe whatever FORWARDED_ALLOW_IPS says
            proxy_headers=False,
        )


@main.command()
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--force", is_flag=True, help="Load the demo users into a DATABASE_URL server that is not embedded."
)
@click.option("--replica", is_flag=True, help="Also a streaming replica (`pg replica start`) to read from.")
def up(port: int, force: bool, replica: bool) -> None:
    """`make run`: embedded PostgreSQL, the plan deployed, and the gateway in demo mode. Ctrl-C stops all."""
    from commercecore.local import devstack

    try:
        stack = devstack.prepare(force)
    except (embedded.EmbeddedError, devstack.DevStackError) as exc:
        fail(exc)
    if replica:
        try:
            stack = devstack.start_replica(stack)
        except (embedded.EmbeddedError, devstack.DevStackError) as exc:
            devstack.shutdown(stack)
            fail(exc)
    # SIGTERM behaves like Ctrl-C, so `kill` also stops PostgreSQL with the gateway
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    error = None
    try:
        devstack.serve(stack, port)
    except devstack.DevStackError as exc:
        error = str(exc)
    finally:
        devstack.shutdown(stack)
    if error:
        fail(error)
