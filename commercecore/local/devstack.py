"""`commercecore up` (what `make run` runs): embedded PostgreSQL, the plan, the gateway in demo mode; with
`--replica` (`make run REPLICA=1`) a streaming replica of it too, which the gateway reads from.

Kept apart from the CLI so the same steps serve tests and the Makefile.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from commercecore.deploy import DeployError
from commercecore.deploy.engine import Deployer
from commercecore.local import embedded, seed
from commercecore.local.replica import Replica, default_replica
from gateway import guard
from gateway.settings import Settings


class DevStackError(RuntimeError):
    """A step of `make run` failed; the message says which."""


@dataclass(frozen=True)
class DevStack:
    admin_url: str
    gateway_url: str
    cluster: embedded.Cluster | None  # None when DATABASE_URL points elsewhere
    replica: Replica | None = None
    replica_url: str | None = None  # the authenticator on the replica


def _authenticator_password(data_root: Path) -> str:
    """The embedded cluster's authenticator password: generated once, kept beside the data (0600)."""
    path = data_root / "authenticator.password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


def prepare(force: bool = False) -> DevStack:
    """Start (or reuse) the database, deploy pending changes, and give the authenticator its password."""
    cluster: embedded.Cluster | None = None
    if os.environ.get("DATABASE_URL"):
        admin_url = os.environ["DATABASE_URL"]
        embedded.check_server_version(admin_url)
        try:
            seed.require_embedded(admin_url, force)
        except seed.NotEmbedded as exc:
            raise DevStackError(str(exc)) from None
    else:
        cluster = embedded.start_default()
        admin_url = cluster.url()
    try:
        Deployer(admin_url, embedded.project_root()).deploy()
    except DeployError as exc:
        raise DevStackError(f"deploying the plan failed: {exc}") from exc
    seed.seed_demo(admin_url)
    given = os.environ.get("COMMERCECORE_GATEWAY_URL") if cluster is None else None
    if given:
        return DevStack(admin_url=admin_url, gateway_url=given, cluster=cluster)
    # the gateway logs in as `authenticator`, never as the deploying role (it refuses a superuser)
    data_root = (cluster or embedded.default_cluster()).data_dir.parent
    data_root.mkdir(parents=True, exist_ok=True)
    password = _authenticator_password(data_root)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("alter role authenticator password {}").format(sql.Literal(password)))
    if cluster is not None:
        gateway_url = cluster.url(user="authenticator", password=password)
    else:
        gateway_url = make_conninfo(admin_url, user="authenticator", password=password)
    return DevStack(admin_url=admin_url, gateway_url=gateway_url, cluster=cluster)


def start_replica(stack: DevStack) -> DevStack:
    """The embedded cluster's streaming replica (made on first use), and the gateway's URL on it."""
    if stack.cluster is None:
        raise DevStackError("--replica streams from the embedded cluster: unset DATABASE_URL")
    replica = default_replica()
    replica.start()
    password = _authenticator_password(stack.cluster.data_dir.parent)
    url = replica.cluster.url(user="authenticator", password=password)
    return dataclasses.replace(stack, replica=replica, replica_url=url)


def demo_settings(stack: DevStack) -> Settings:
    """The gateway's settings in demo mode on the stack's logins (the replica's too), each checked: never a
    superuser or BYPASSRLS login."""
    environ = {**os.environ, "COMMERCECORE_DEMO": "1", "COMMERCECORE_GATEWAY_URL": stack.gateway_url}
    if stack.replica_url is not None:
        environ["DATABASE_REPLICA_URLS"] = stack.replica_url
    settings = Settings.from_env(environ)
    try:
        for url in (settings.database_url, *settings.replicas.urls):
            guard.check_url(url, settings.pool_timeout)
    except guard.UnsafeLogin as exc:
        raise DevStackError(str(exc)) from None
    return settings


def serve(stack: DevStack, port: int) -> None:
    """Run the gateway in the foreground until Ctrl-C."""
    import uvicorn

    from gateway.app import create_app
    from gateway.server import bounded_protocol

    try:
        from commercecore.standin import start_demo_standin
    except ModuleNotFoundError as exc:
        raise DevStackError(
            f"demo mode needs the Stripe stand-in ({exc}): pip install -e '.[standin]' (make install does)"
        ) from None
    settings = demo_settings(stack)
    gateway_url = f"http://127.0.0.1:{port}"
    try:
        # no internet in demo mode: checkout URLs open the local stand-in's Pay / Decline page
        standin = start_demo_standin(gateway_url)
    except OSError as exc:
        raise DevStackError(
            f"the Stripe stand-in could not listen ({exc}); set STRIPE_API_BASE to a free port"
        ) from exc
    extra = f"  Stripe stand-in: {standin.url}\n" if standin is not None else ""
    if stack.replica is not None:
        extra += f"  Replica: 127.0.0.1:{stack.replica.cluster.port} (reads of visitors and customers)\n"
    logins = "\n".join(f"  {email} / {password}" for email, password, _name, _role in seed.DEMO_USERS)
    print(
        f"\nCommerceCore DBX is up: {gateway_url}\n"
        f"  API docs: {gateway_url}/docs\n"
        f"{extra}"
        f"Demo logins:\n{logins}\n"
        "Ctrl-C stops the gateway and PostgreSQL.\n",
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,  # the gateway writes its own JSON access log
            server_header=False,
            http=bounded_protocol(settings.limits),
            proxy_headers=False,  # the app reads X-Forwarded-For itself (COMMERCECORE_TRUSTED_PROXIES)
        )
    finally:
        if standin is not None:
            standin.stop()


def shutdown(stack: DevStack) -> None:
    if stack.replica is not None:
        stack.replica.stop()  # its data and slot stay: the next `up --replica` resumes streaming
    if stack.cluster is not None:
        stack.cluster.stop()
