"""Stripe objects -> billing transitions. The same functions serve webhooks, reconciliation and checkout, so a
missed webhook and a delivered one end in the same state. Each call runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from gateway.payments.common import error_code, int_or_none, is_business_error, object_id, text
from gateway.payments.store import Tx

PAID_STATUSES = frozenset({"paid", "no_payment_required"})
# the outcome of a refund event whose payment intent no payment has yet; applied once one has
DEFERRED = "deferred:unknown_payment_intent"


@dataclass
class Transition:
    """What one Stripe object did to the books: the outcome (as the billing function said it), the payment
    concerned, and refunds created by it that still have to be sent to Stripe."""

    outcome: str
    payment_id: int | None = None
    refunds: list[dict[str, Any]] = field(default_factory=list)
    changed: bool = False
    checkout_session_id: str | None = None


async def find_payment(
    tx: Tx,
    *,
    session_id: str | None = None,
    payment_intent_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    client_reference_id: Any = None,
) -> dict[str, Any] | None:
    """The attempt a Stripe object belongs to: by its checkout session first (an id Stripe made), then by
    our payment id in metadata / client_reference_id, then by payment intent."""
    if session_id:
        found = await tx.one("select billing.find_payment(%s, null, null)", [session_id])
        if found is not None:
            return dict(found)
    hint = int_or_none((metadata or {}).get("payment_id")) or int_or_none(client_reference_id)
    if hint is None and payment_intent_id is None:
        return None
    found = await tx.one("select billing.find_payment(null, %s, %s)", [payment_intent_id, hint])
    return dict(found) if found is not None else None


async def guarded(tx: Tx, step: Callable[..., Awaitable[Transition]], *args: Any) -> Transition:
    """Runs one transition in a savepoint: a business error of a billing function (PT4xx: a mismatched
    session, an unknown refund) is a permanent answer, recorded as the outcome `rejected:<code>`; anything
    else (an outage) propagates and rolls the whole transaction back."""
    try:
        async with tx.savepoint():
            result: Transition = await step(tx, *args)
            return result
    except psycopg.Error as exc:
        if not is_business_error(exc):
            raise
        return Transition(f"rejected:{error_code(exc) or exc.sqlstate}")


async def complete(
    tx: Tx,
    payment_id: int,
    amount_minor: int,
    currency: str,
    payment_intent_id: str | None,
    session_id: str | None,
) -> Transition:
    result = await tx.one(
        "select billing.mark_payment_completed(%s, %s, %s, %s, %s)",
        [payment_id, amount_minor, currency, payment_intent_id, session_id],
    )
    refund = result.get("refund")
    return Transition(
        str(result["outcome"]),
        payment_id,
        [dict(refund)] if isinstance(refund, Mapping) else [],
        bool(result.get("changed")),
    )


async def close(tx: Tx, payment_id: int, status: str, reason: str | None = None) -> Transition:
    """created/open -> failed | expired | canceled; the billing function keeps it forward-only."""
    if status == "expired":
        result = await tx.one("select billing.mark_payment_expired(%s)", [payment_id])
    elif status == "failed":
        result = await tx.one("select billing.mark_payment_failed(%s, %s)", [payment_id, reason])
    elif status == "canceled":
        result = await tx.one("select billing.mark_payment_canceled(%s, %s)", [payment_id, reason])
    else:
        raise ValueError(f"not a closing status: {status!r}")
    return Transition(
        str(result["outcome"]),
        payment_id,
        changed=bool(result.get("changed")),
        checkout_session_id=text(result.get("checkout_session_id")),
    )


async def apply_session(tx: Tx, payment_id: int, session: Mapping[str, Any]) -> Transition:
    """A Checkout Session as Stripe reports it now -> the attempt's transition (webhook or reconcile)."""
    status = session.get("status")
    payment_status = session.get("payment_status")
    if status == "complete" and payment_status in PAID_STATUSES:
        amount = int_or_none(session.get("amount_total"))
        currency = text(session.get("currency"))
        if amount is None or currency is None:
            return Transition("rejected:session_without_amount", payment_id)
        intent = object_id(session.get("payment_intent"))
        result = await complete(tx, payment_id, amount, currency, intent, text(session.get("id")))
        if intent is not None:
            await apply_deferred_refunds(tx, intent)
        return result
    if status == "complete":
        # a delayed payment method (bank debit): the money is not there yet; async_payment_* will say
        return Transition("awaiting_async_payment", payment_id)
    if status == "expired":
        return await close(tx, payment_id, "expired")
    return Transition("still_open", payment_id)


async def apply_refund(tx: Tx, refund: Mapping[str, Any], payment_intent_id: str | None = None) -> Transition:
    """A Stripe refund object (refund.*, or one of charge.refunds) -> the refund's transition."""
    stripe_refund_id = text(refund.get("id"))
    if stripe_refund_id is None:
        return Transition("rejected:refund_without_id")
    metadata = refund.get("metadata") or {}
    our_refund_id = int_or_none(metadata.get("refund_id")) if isinstance(metadata, Mapping) else None
    if our_refund_id is not None:
        # the confirmation can overtake the gateway's own attach_refund (Stripe answers, then sends the
        # event, then the gateway records the id): attach it here, idempotently, so it is never taken for a
        # refund made outside the gateway
        try:
            async with tx.savepoint():
                await tx.one("select billing.attach_refund(%s, %s)", [our_refund_id, stripe_refund_id])
        except psycopg.Error as exc:
            if not is_business_error(exc):
                raise
    status = refund.get("status")
    intent = object_id(refund.get("payment_intent")) or payment_intent_id
    if status == "succeeded":
        try:
            async with tx.savepoint():
                result = await tx.one(
                    "select billing.mark_refund_succeeded(%s, %s, %s)",
                    [stripe_refund_id, int_or_none(refund.get("amount")), intent],
                )
        except psycopg.Error as exc:
            if intent is not None and is_business_error(exc) and error_code(exc) == "not_found":
                # Stripe does not order its events: a refund made in the dashboard can arrive before the
                # success of its payment. It waits in the inbox until the payment intent is known.
                return Transition(DEFERRED)
            raise
        return Transition(
            f"refund_{result['outcome']}",
            int_or_none(result.get("payment_id")),
            changed=bool(result["changed"]),
        )
    if status in ("failed", "canceled"):
        reason = text(refund.get("failure_reason")) or str(status)
        result = await tx.one(
            "select billing.mark_refund_failed(%s, %s, %s)", [stripe_refund_id, reason, our_refund_id]
        )
        return Transition(
            f"refund_{result['outcome']}",
            int_or_none(result.get("payment_id")),
            changed=bool(result["changed"]),
        )
    return Transition("refund_pending")


async def apply_refund_event(tx: Tx, kind: str, obj: Mapping[str, Any]) -> Transition:
    """A refund event: charge.refunded (the charge's list of refunds) or refund.* (one refund)."""
    if kind != "charge.refunded":
        return await guarded(tx, apply_refund, obj, None)
    refunds = obj.get("refunds")
    listed = refunds.get("data") if isinstance(refunds, Mapping) else None
    if not isinstance(listed, list) or not listed:
        return Transition("ignored:no_refund_list")
    intent = object_id(obj.get("payment_intent"))
    results = [await guarded(tx, apply_refund, item, intent) for item in listed if isinstance(item, Mapping)]
    outcomes = sorted({r.outcome for r in results})
    payment_ids = [r.payment_id for r in results if r.payment_id is not None]
    return Transition(",".join(outcomes), payment_ids[0] if payment_ids else None)


async def apply_deferred_refunds(tx: Tx, payment_intent_id: str) -> None:
    """The refund events that waited for this payment intent, applied now that a payment has it, each
    finished in the inbox with its new outcome (webhook, checkout return and reconcile alike)."""
    for event_id, kind, obj in await tx.all(
        "select id, type, object from billing.deferred_refund_events(%s)", [payment_intent_id]
    ):
        result = await apply_refund_event(tx, str(kind), obj)
        if result.outcome != DEFERRED:
            await tx.one(
                "select billing.finish_stripe_event(%s, %s, %s)",
                [event_id, result.outcome, result.payment_id],
            )
