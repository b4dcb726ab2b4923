"""`commercecore`: the command line of the project (server, embedded PostgreSQL, deployments)."""

from __future__ import annotations

import contextlib
import os
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


@pg.command("psql", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def pg_psql(psql_args: tuple[str, ...]) -> None:
    """psql (PostgreSQL 18, from the wheel) on the project database; extra arguments go to psql."""
    try:
        url = embedded.admin_url()
    except embedded.EmbeddedError as exc:
        fail(exc)
    psql = str(embedded.pg_bin("psql"))
    os.execv(psql, [psql, url, *psql_args])  # noqa: S606 - psql replaces this process, as `exec psql` would


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
        check_url(settings.database_url, settings.pool_timeout)
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
def up(port: int, force: bool) -> None:
    """`make run`: embedded PostgreSQL, the plan deployed, and the gateway in demo mode. Ctrl-C stops all."""
    from commercecore.local import devstack

    try:
        stack = devstack.prepare(force)
    except (embedded.EmbeddedError, devstack.DevStackError) as exc:
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
