"""`commercecore payments ...`: a click group for the main CLI (`main.add_command(payments)`)."""

from __future__ import annotations

import datetime
import json
import os
import sys

import click
import psycopg
from psycopg_pool import PoolTimeout

from gateway.settings import parse_duration


class DurationType(click.ParamType[datetime.timedelta]):
    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime.timedelta:
        if isinstance(value, datetime.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


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
@click.option(
    "--database-url",
    default=None,
    help="A role that may SET ROLE app_payments (default: COMMERCECORE_GATEWAY_URL, DATABASE_URL, embedded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile_command(older_than: datetime.timedelta, database_url: str | None, as_json: bool) -> None:
    """Apply Stripe's state to attempts stuck open (missed webhooks) and (re)send pending refunds.

    Stripe settings from the environment (STRIPE_SECRET_KEY, STRIPE_API_BASE, ...). Exit 1 when something
    could not be reconciled (the report says what; the next run retries it)."""
    from gateway.payments.client import client_from_settings
    from gateway.payments.config import PaymentSettings
    from gateway.payments.reconcile import reconcile
    from gateway.settings import SettingsError

    try:
        settings = PaymentSettings.from_env()
        url = database_url or os.environ.get("COMMERCECORE_GATEWAY_URL")
        if not url:
            from commercecore.local import embedded

            url = embedded.admin_url()
        report = reconcile(url, client_from_settings(settings), older_than)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except (psycopg.Error, PoolTimeout) as exc:
        raise click.ClickException(f"database: {str(exc).strip() or type(exc).__name__}") from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        outcomes = ", ".join(f"{name} {count}" for name, count in sorted(report.outcomes.items())) or "none"
        click.echo(f"attempts checked: {report.checked} ({outcomes})")
        click.echo(
            f"refunds: sent {report.refunds_sent}, confirmed {report.refunds_confirmed}, "
            f"failed {report.refunds_failed}, pending {report.refunds_pending}"
        )
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
    if report.errors:
        sys.exit(1)
