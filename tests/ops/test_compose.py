"""docker-compose.yml, Dockerfile and .env.example against what the code reads and the plan it deploys.
(No Docker engine is needed: the files are parsed and cross-checked.)"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from commercecore.local import embedded
from gateway.settings import Settings, random_secret

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_SETTINGS = (
    "DATABASE_URL",
    "COMMERCECORE_JWT_SECRET",
    "COMMERCECORE_JWT_AUDIENCE",
    "COMMERCECORE_COOKIE_SECURE",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "PUBLIC_BASE_URL",
    "ORDER_PAYMENT_TTL",
    "ORDER_MAX_UNPAID_AGE",
    "COMMERCECORE_MAX_OPEN_ORDERS",
    "COMMERCECORE_MAX_UNITS_PER_PRODUCT",
)
_ENV_NAME = re.compile(r"[\"']((?:COMMERCECORE|DATABASE|STRIPE|PUBLIC|ORDER)_[A-Z0-9_]+)[\"']")
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, line
            pairs[name.strip()] = value.strip()
    return pairs


def _names_read_by(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in _ENV_NAME.findall(path.read_text())}


def _service_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _command(compose: dict[str, Any], service: str) -> str:
    command = compose["services"][service]["command"]
    return " ".join(command) if isinstance(command, list) else str(command)


def test_postgres_service(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:17"
    assert "shared_preload_libraries=pg_stat_statements" in postgres["command"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert all(port.startswith("127.0.0.1:") for port in postgres["ports"])
    assert "POSTGRES_PASSWORD" in postgres["environment"]


def test_deploy_runs_sqitch_on_this_plan(compose: dict[str, Any]) -> None:
    deploy = compose["services"]["deploy"]
    assert deploy["image"].startswith("sqitch/sqitch")
    assert deploy["depends_on"]["postgres"]["condition"] == "service_healthy"
    source, target = deploy["volumes"][0].split(":")[:2]
    assert (ROOT / source).resolve() == ROOT  # the repository itself is mounted ...
    assert deploy["working_dir"] == target  # ... and sqitch runs where sqitch.conf and sqitch.plan are
    conf = (ROOT / "sqitch.conf").read_text()
    assert re.search(r"engine\s*=\s*pg", conf)
    assert re.search(r"plan_file\s*=\s*sqitch\.plan", conf)
    assert "%project=commercecore" in (ROOT / "sqitch.plan").read_text()
    command = _command(compose, "deploy")
    match = re.search(r"sqitch deploy (?:--verify )?(db:pg://\S+)", command)
    assert match, command
    url = urlsplit(_INTERPOLATION.sub("x", match.group(1)).removeprefix("db:"))
    assert url.hostname == "postgres"
    database = compose["services"]["postgres"]["environment"]["POSTGRES_DB"]
    assert url.path == f"/{database}"
    assert "alter role authenticator password" in command
    assert "AUTHENTICATOR_PASSWORD" in deploy["environment"]


def test_gateway_gets_every_setting_it_needs_and_nothing_unknown(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert "serve" in _command(compose, "gateway")
    assert gateway["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    env = _service_env(compose, "gateway")
    read = _names_read_by([ROOT / "gateway" / "settings.py", *sorted((ROOT / "gateway").rglob("*.py"))])
    unknown = set(env) - read - set(DEPLOYMENT_SETTINGS)
    assert not unknown, f"compose passes variables nothing reads: {unknown}"
    # what Settings.from_env refuses to start without, outside demo mode
    assert "COMMERCECORE_JWT_SECRET" in env
    assert {"COMMERCECORE_GATEWAY_URL", "DATABASE_URL"} & set(env)
    assert "COMMERCECORE_DEMO" not in env  # production settings: no public demo secrets
    gateway_url = urlsplit(
        _INTERPOLATION.sub("x", env.get("COMMERCECORE_GATEWAY_URL") or env["DATABASE_URL"])
    )
    assert gateway_url.username == "authenticator"  # never the superuser
    assert gateway_url.hostname == "postgres"
    settings_names = _names_read_by([ROOT / "gateway" / "settings.py"])
    assert "COMMERCECORE_JWT_SECRET" in settings_names
    assert {"COMMERCECORE_GATEWAY_URL", "DATABASE_URL"} <= settings_names
    # the limits on unpaid orders reach the gateway
    assert {
        "ORDER_MAX_UNPAID_AGE",
        "COMMERCECORE_MAX_OPEN_ORDERS",
        "COMMERCECORE_MAX_UNITS_PER_PRODUCT",
    } <= set(env)


def test_jobs_service(compose: dict[str, Any]) -> None:
    jobs = compose["services"]["jobs"]
    assert _command(compose, "jobs").startswith("commercecore jobs run")
    assert jobs["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert jobs["stop_signal"] == "SIGTERM"
    env = _service_env(compose, "jobs")
    assert "DATABASE_URL" in env
    assert "ORDER_PAYMENT_TTL" in env
    assert "ORDER_MAX_UNPAID_AGE" in env  # the gateway refuses checkout at the age the job expires at


def test_env_example_lists_deployment_settings_and_every_compose_variable(compose: dict[str, Any]) -> None:
    example = _env_example()
    assert set(DEPLOYMENT_SETTINGS) <= set(example)
    used = set(_INTERPOLATION.findall((ROOT / "docker-compose.yml").read_text()))
    assert used <= set(example), f"compose uses variables .env.example does not list: {used - set(example)}"
    # placeholders only: secrets are empty, so nothing starts with a secret from the example
    for name in (
        "COMMERCECORE_JWT_SECRET",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "POSTGRES_PASSWORD",
        "COMMERCECORE_METRICS_TOKEN",
    ):
        assert example[name] == "", name
    required = re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text())
    assert {
        "POSTGRES_PASSWORD",
        "AUTHENTICATOR_PASSWORD",
        "COMMERCECORE_JWT_SECRET",
        "COMMERCECORE_METRICS_TOKEN",
    } <= set(required)


def test_metrics_need_a_token_under_compose(compose: dict[str, Any]) -> None:
    """The gateway listens on 0.0.0.0 in its container: every scrape comes from another address, so
    /metrics is served with a token or to nobody; compose refuses to start without one."""
    env = _service_env(compose, "gateway")
    assert env["COMMERCECORE_METRICS_TOKEN"].startswith("${COMMERCECORE_METRICS_TOKEN:?")


def test_images_never_receive_secrets_or_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".data/" in ignored
    assert "db/backups/out/" in ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert "COPY sqitch.plan" in dockerfile
    assert 'CMD ["commercecore", "serve"' in dockerfile


def test_logged_statements_carry_no_bind_values(compose: dict[str, Any]) -> None:
    """Emails and password hashes are bind values: no slow-statement log or error report shows them."""
    command = compose["services"]["postgres"]["command"]
    for setting in ("log_parameter_max_length", "log_parameter_max_length_on_error"):
        assert f"{setting}=0" in command
        assert embedded.BASE_SETTINGS[setting] == "0"


def test_the_gateway_trusts_forwarded_for_from_the_compose_network_only(compose: dict[str, Any]) -> None:
    """Behind the compose network every client would otherwise share the proxy's address, and so its login
    delays and budgets."""
    subnets = [item["subnet"] for item in compose["networks"]["default"]["ipam"]["config"]]
    assert len(subnets) == 1
    env = _service_env(compose, "gateway")
    match = re.fullmatch(r"\$\{COMMERCECORE_TRUSTED_PROXIES:-([^}]*)\}", env["COMMERCECORE_TRUSTED_PROXIES"])
    assert match, env["COMMERCECORE_TRUSTED_PROXIES"]
    trusted = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://authenticator@postgres/commercecore",
            "COMMERCECORE_JWT_SECRET": random_secret(),
            "COMMERCECORE_TRUSTED_PROXIES": match.group(1),
        }
    ).trusted_proxies
    assert trusted == (str(ipaddress.ip_network(subnets[0])),)
    assert "--forwarded-allow-ips" not in _command(compose, "gateway")


def test_the_replica_profile(compose: dict[str, Any]) -> None:
    """`docker compose --profile replica up`: a streaming replica of postgres, made once by pg_basebackup
    with a slot; postgres lets it stream from the compose network; the gateway reads from it when
    DATABASE_REPLICA_URLS names it, and from postgres alone by default."""
    replica = compose["services"]["replica"]
    assert replica["profiles"] == ["replica"]
    assert replica["image"] == compose["services"]["postgres"]["image"]
    assert replica["user"] == "postgres"  # pg_basebackup's files are the server's own
    assert all(port.startswith("127.0.0.1:") for port in replica["ports"])
    assert replica["environment"]["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    command = _command(compose, "replica")
    for option in (
        "--host=postgres",
        "--write-recovery-conf",
        "--create-slot",
        "--slot=",
        "--wal-method=stream",
    ):
        assert option in command, option
    assert '[ ! -s "$$PGDATA/PG_VERSION" ]' in command  # made once: a restart keeps its data
    assert "hot_standby=on" in command
    volume = replica["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert volume not in {v.split(":")[0] for v in compose["services"]["postgres"]["volumes"]}
    # postgres: a replication line for the compose network, added when its volume is initialised
    mounts = [v.split(":") for v in compose["services"]["postgres"]["volumes"]]
    script = next(
        source for source, target, *_ in mounts if target.startswith("/docker-entrypoint-initdb.d/")
    )
    text = (ROOT / script).read_text()
    assert "host replication postgres samenet scram-sha-256" in text
    assert (ROOT / script).stat().st_mode & 0o111, "an init script runs only when executable"
    env = _service_env(compose, "gateway")
    assert env["DATABASE_REPLICA_URLS"] == "${DATABASE_REPLICA_URLS:-}"
    assert "replica" not in compose["services"]["gateway"].get("depends_on", {})
    assert (
        "postgresql://authenticator:<AUTHENTICATOR_PASSWORD>@replica:5432/commercecore"
        in (ROOT / ".env.example").read_text()
    )
