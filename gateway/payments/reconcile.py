"""Missed webhooks: attempts still open past a threshold are looked up at Stripe and given the same
transitions a webhook would; pending refunds are (re)sent with their idempotency keys, and sent ones are
polled. Idempotent: a second run changes nothing that the first settled.

The same code serves the gateway's event loop and the CLI (`commercecore payments reconcile`, the jobs
runner), which runs it on a loop and a pool of its own (`reconcile`)."""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import stripe

from gateway.payments import transitions as tr
from gateway.payments.client import client_from_settings
from gateway.payments.common import log, object_id, stripe_reason, text
from gateway.payments.config import PaymentSettings
from gateway.payments.refunds import send_refund
from gateway.payments.store import PaymentStore, own_store


@dataclass
class ReconcileReport:
    """What one run saw and did. `outcomes` counts the transitions by outcome (paid, expired,
    refund_required, still_open, awaiting_async_payment, unchanged, ...)."""

    checked: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    refunds_sent: int = 0
    refunds_confirmed: int = 0
    refunds_failed: int = 0
    refunds_pending: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "outcomes": dict(sorted(self.outcomes.items())),
            "refunds_sent": self.refunds_sent,
            "refunds_confirmed": self.refunds_confirmed,
            "refunds_failed": self.refunds_failed,
            "refunds_pending": self.refunds_pending,
            "errors": list(self.errors),
        }


REFUND_COLUMNS = [
    "refund_id", "payment_id", "order_id", "payment_intent_id", "checkout_session_id", "amount_minor",
    "currency", "reason", "idempotency_key", "stripe_refund_id",
]  # fmt: skip


def reconcile(conninfo: str, settings: PaymentSettings, older_than: datetime.timedelta) -> ReconcileReport:
    """One reconciliation run against the database at `conninfo` (a role that may SET ROLE app_payments:
    the authenticator, or the owner/superuser for jobs), for the commands that are not on an event loop:
    a loop, a small pool and a Stripe client of its own for the run."""

    async def run() -> ReconcileReport:
        async with own_store(conninfo, application_name="commercecore-reconcile") as store:
            client = client_from_settings(settings)
            try:
                return await reconcile_with(store, client, older_than)
            finally:
                await client.aclose()

    return asyncio.run(run())


async def reconcile_with(
    store: PaymentStore, client: stripe.StripeClient, older_than: datetime.timedelta, *, request_id: str = ""
) -> ReconcileReport:
    report = ReconcileReport()
    async with store.transaction(request_id=request_id) as tx:
        stale = await tx.all(
            "select payment_id, checkout_session_id, status from billing.stale_payments(%s)", [older_than]
        )
    for payment_id, session_id, status in stale:
        report.checked += 1
        try:
            outcome = await _reconcile_payment(store, client, payment_id, session_id, request_id)
            # a refund this created is pending in the database: reconcile_refunds below sends it
            report.outcomes[outcome] += 1
        except stripe.StripeError as exc:
            report.errors.append(f"payment {payment_id} ({status}): {stripe_reason(exc)}")
        except psycopg.Error as exc:  # PoolTimeout among them
            report.errors.append(f"payment {payment_id}: database: {str(exc).strip() or type(exc).__name__}")
    await reconcile_refunds(store, client, report, request_id=request_id)
    if report.errors:
        log.warning("reconcile: %d errors: %s", len(report.errors), "; ".join(report.errors[:5]))
    log.info("reconcile: %s", report.as_dict())
    return report


async def _session_state(
    client: stripe.StripeClient, session_id: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(the Checkout Session as Stripe has it, None when Stripe does not know it; the status of its payment
    intent when the session is complete but unpaid)."""
    try:
        session = (await client.v1.checkout.sessions.retrieve_async(session_id)).to_dict()
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            raise
        return None, None
    intent_id = object_id(session.get("payment_intent"))
    # complete but unpaid: a delayed payment still processing, or one that failed (the session looks the
    # same; its payment intent tells)
    if (
        intent_id
        and session.get("status") == "complete"
        and session.get("payment_status") not in tr.PAID_STATUSES
    ):
        return session, (await client.v1.payment_intents.retrieve_async(intent_id)).status
    return session, None


async def _reconcile_payment(
    store: PaymentStore, client: stripe.StripeClient, payment_id: int, session_id: str | None, request_id: str
) -> str:
    """The transition of one stale attempt, as its session stands at Stripe; its outcome."""
    session, intent_status = await _session_state(client, session_id) if session_id else (None, None)
    async with store.transaction(request_id=request_id) as tx:
        if intent_status in ("requires_payment_method", "canceled"):
            result = await tr.guarded(tx, tr.close, payment_id, "failed", "async_payment_failed")
        elif session is not None:
            result = await tr.guarded(tx, tr.apply_session, payment_id, session)
        elif session_id is None:
            # begun but never given a session (Stripe refused, or the process died): nobody can pay it
            result = await tr.guarded(tx, tr.close, payment_id, "failed", "checkout session never created")
        else:
            result = await tr.guarded(
                tx, tr.close, payment_id, "failed", "checkout session unknown to Stripe"
            )
    return result.outcome


async def reconcile_refunds(
    store: PaymentStore, client: stripe.StripeClient, report: ReconcileReport, *, request_id: str = ""
) -> None:
    """billing.pending_refunds (which also creates the automatic refunds still missing): send the unsent
    ones, ask Stripe about the sent ones."""
    async with store.transaction(request_id=request_id) as tx:
        rows = await tx.all(f"select {', '.join(REFUND_COLUMNS)} from billing.pending_refunds()")
    for row in rows:
        refund = dict(zip(REFUND_COLUMNS, row, strict=True))
        try:
            await _reconcile_refund(store, client, refund, report, request_id)
        except stripe.StripeError as exc:
            report.refunds_pending += 1
            report.errors.append(f"refund {refund['refund_id']}: {stripe_reason(exc)}")
        except psycopg.Error as exc:  # PoolTimeout among them
            report.errors.append(
                f"refund {refund['refund_id']}: database: {str(exc).strip() or type(exc).__name__}"
            )


async def _send_pending(
    store: PaymentStore,
    client: stripe.StripeClient,
    refund: Mapping[str, Any],
    report: ReconcileReport,
    rid: str,
) -> str | None:
    """Sends a refund Stripe has not seen yet; its Stripe id when Stripe accepted it."""
    sent = await send_refund(store, client, refund, request_id=rid)
    if sent.state == "sent":
        report.refunds_sent += 1
    elif sent.state == "failed":
        report.refunds_failed += 1
    else:
        report.refunds_pending += 1
        report.errors.append(f"refund {refund['refund_id']}: {sent.reason}")
    return sent.stripe_refund_id if sent.state == "sent" else None


async def _reconcile_refund(
    store: PaymentStore,
    client: stripe.StripeClient,
    refund: dict[str, Any],
    report: ReconcileReport,
    rid: str,
) -> None:
    """One pending refund: sent if it was not, then its state at Stripe applied and counted."""
    if refund["stripe_refund_id"] is None:
        refund["stripe_refund_id"] = await _send_pending(store, client, refund, report, rid)
        if refund["stripe_refund_id"] is None:
            return
    stripe_refund = (await client.v1.refunds.retrieve_async(str(refund["stripe_refund_id"]))).to_dict()
    async with store.transaction(request_id=rid) as tx:
        result = await tr.guarded(tx, tr.apply_refund, stripe_refund, text(refund["payment_intent_id"]))
    if result.outcome in ("refund_succeeded", "refund_already_succeeded"):
        report.refunds_confirmed += 1
    elif result.outcome in ("refund_failed", "refund_unchanged"):
        report.refunds_failed += 1
    else:
        report.refunds_pending += 1
