"""Missed webhooks: attempts still open past a threshold are looked up at Stripe and given the same
transitions a webhook would; pending refunds are (re)sent with their idempotency keys, and sent ones are
polled. Idempotent: a second run changes nothing that the first settled."""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import stripe
from psycopg_pool import PoolTimeout

from gateway.payments import transitions as tr
from gateway.payments.common import log, object_id, stripe_reason, text
from gateway.payments.refunds import send_refund
from gateway.payments.store import PaymentStore


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


def reconcile(conninfo: str, client: stripe.StripeClient, older_than: datetime.timedelta) -> ReconcileReport:
    """One reconciliation run against the database at `conninfo` (a role that may SET ROLE app_payments:
    the authenticator, or the owner/superuser for jobs)."""
    with PaymentStore(conninfo, min_size=1, max_size=2, application_name="commercecore-reconcile") as store:
        return reconcile_with(store, client, older_than)


def reconcile_with(
    store: PaymentStore, client: stripe.StripeClient, older_than: datetime.timedelta, *, request_id: str = ""
) -> ReconcileReport:
    report = ReconcileReport()
    with store.transaction(request_id=request_id) as tx:
        stale = tx.all(
            "select payment_id, checkout_session_id, status from billing.stale_payments(%s)", [older_than]
        )
    for payment_id, session_id, status in stale:
        report.checked += 1
        try:
            session: dict[str, Any] | None = None
            intent_status: str | None = None
            if session_id is not None:
                try:
                    session = client.v1.checkout.sessions.retrieve(session_id).to_dict()
                except stripe.InvalidRequestError as exc:
                    if exc.http_status != 404:
                        raise
                intent_id = object_id(session.get("payment_intent")) if session else None
                # complete but unpaid: a delayed payment still processing, or one that failed (the session
                # looks the same; its payment intent tells)
                if (
                    session
                    and intent_id
                    and session.get("status") == "complete"
                    and session.get("payment_status") not in tr.PAID_STATUSES
                ):
                    intent_status = client.v1.payment_intents.retrieve(intent_id).status
            with store.transaction(request_id=request_id) as tx:
                if intent_status in ("requires_payment_method", "canceled"):
                    result = tr.guarded(tx, tr.close, payment_id, "failed", "async_payment_failed")
                elif session is not None:
                    result = tr.guarded(tx, tr.apply_session, payment_id, session)
                elif session_id is None:
                    # begun but never given a session (Stripe refused, or the process died): nobody can pay it
                    result = tr.guarded(tx, tr.close, payment_id, "failed", "checkout session never created")
                else:
                    result = tr.guarded(
                        tx, tr.close, payment_id, "failed", "checkout session unknown to Stripe"
                    )
            # a refund this created is pending in the database: reconcile_refunds below sends it
            report.outcomes[result.outcome] += 1
        except stripe.StripeError as exc:
            report.errors.append(f"payment {payment_id} ({status}): {stripe_reason(exc)}")
        except (psycopg.Error, PoolTimeout) as exc:
            report.errors.append(f"payment {payment_id}: database: {str(exc).strip() or type(exc).__name__}")
    reconcile_refunds(store, client, report, request_id=request_id)
    if report.errors:
        log.warning("reconcile: %d errors: %s", len(report.errors), "; ".join(report.errors[:5]))
    log.info("reconcile: %s", report.as_dict())
    return report


def reconcile_refunds(
    store: PaymentStore, client: stripe.StripeClient, report: ReconcileReport, *, request_id: str = ""
) -> None:
    """billing.pending_refunds (which also creates the automatic refunds still missing): send the unsent
    ones, ask Stripe about the sent ones."""
    with store.transaction(request_id=request_id) as tx:
        columns = [
            "refund_id", "payment_id", "order_id", "payment_intent_id", "checkout_session_id", "amount_minor",
            "currency", "reason", "idempotency_key", "stripe_refund_id",
        ]  # fmt: skip
        rows = tx.all(f"select {', '.join(columns)} from billing.pending_refunds()")
    for row in rows:
        refund = dict(zip(columns, row, strict=True))
        try:
            if refund["stripe_refund_id"] is None:
                sent = send_refund(store, client, refund, request_id=request_id)
                if sent.state == "sent":
                    report.refunds_sent += 1
                elif sent.state == "failed":
                    report.refunds_failed += 1
                else:
                    report.refunds_pending += 1
                    report.errors.append(f"refund {refund['refund_id']}: {sent.reason}")
                if sent.state != "sent" or sent.stripe_refund_id is None:
                    continue
                refund["stripe_refund_id"] = sent.stripe_refund_id
            stripe_refund = client.v1.refunds.retrieve(str(refund["stripe_refund_id"])).to_dict()
            with store.transaction(request_id=request_id) as tx:
                result = tr.guarded(tx, tr.apply_refund, stripe_refund, text(refund["payment_intent_id"]))
            if result.outcome in ("refund_succeeded", "refund_already_succeeded"):
                report.refunds_confirmed += 1
            elif result.outcome in ("refund_failed", "refund_unchanged"):
                report.refunds_failed += 1
            else:
                report.refunds_pending += 1
        except stripe.StripeError as exc:
            report.refunds_pending += 1
            report.errors.append(f"refund {refund['refund_id']}: {stripe_reason(exc)}")
        except (psycopg.Error, PoolTimeout) as exc:
            report.errors.append(
                f"refund {refund['refund_id']}: database: {str(exc).strip() or type(exc).__name__}"
            )
