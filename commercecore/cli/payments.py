"""`commercecore payments ...`: a click group for the main CLI (`main.add_command(payments)`)."""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import TYPE_CHECKING

import click
import psycopg
from psycopg_pool import PoolTimeout

from commercecore.cli.common import DurationType, database_url_option, fail
from commercecore.text import one_line

if TYPE_CHECKING:
    from gateway.payments.reconcile import ReconcileReport


@click.group()
def payments() -> None:
    """Stripe payments: reconciliation of missed webhooks and pending refunds."""


@payments.command("reconcile")
@click.option(
    "--older-than",
    type=DurationType(),
    default="15m",
    show_default=True,
    help="Attempts still open after this long are looked up at Stripe.",
)
@database_url_option(
    "A role that may SET ROLE app_payments (default: COMMERCECORE_GATEWAY_URL, DATABASE_URL, embedded)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile_command(older_than: datetime.timedelta, database_url: str | None, as_json: bool) -> None:
    """Apply Stripe's state to attempts stuck open (missed webhooks) and (re)send pending refunds.

    Stripe settings from the environment (STRIPE_SECRET_KEY, STRIPE_API_BASE, ...). Exit 1 when something
    could not be reconciled (the report says what; the next run retries it)."""
    from commercecore.local import embedded
    from gateway.payments.config import PaymentSettings
    from gateway.payments.reconcile import reconcile
    from gateway.settings import SettingsError

    try:
        settings = PaymentSettings.from_env()
        url = database_url or os.environ.get("COMMERCECORE_GATEWAY_URL") or embedded.admin_url()
        report = reconcile(url, settings, older_than)
    except (SettingsError, embedded.EmbeddedError) as exc:
        fail(exc)
    except (psycopg.Error, PoolTimeout) as exc:
        fail(f"database: {one_line(exc)}")
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    if report.errors:
        sys.exit(1)


def _print_report(report: ReconcileReport) -> None:
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(report.outcomes.items())) or "none"
    click.echo(f"attempts checked: {report.checked} ({outcomes})")
    click.echo(
        f"refunds: sent {report.refunds_sent}, confirmed {report.refunds_confirmed}, "
        f"failed {report.refunds_failed}, pending {report.refunds_pending}"
    )
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
