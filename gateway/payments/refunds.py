"""Refunds at Stripe: every refund is a row first (billing.request_refund / the automatic refund of a success
that could not pay its order), then `refunds.create` with the row's idempotency key, then attach_refund. A
retry (reconcile) sends the same key, so Stripe answers with the same refund and money moves once. Stripe
confirms later (charge.refunded / refund.updated, or reconcile), and only then is the refund counted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import psycopg
import stripe

from gateway import db
from gateway.errors import ApiError, database_failure
from gateway.payments.common import (
    int_or_none,
    is_transient,
    log,
    object_id,
    stripe_error_details,
    stripe_reason,
    text,
)
from gateway.payments.store import PaymentStore
from gateway.response import response_headers

if TYPE_CHECKING:
    from stripe.params._refund_create_params import RefundCreateParams

# our reasons -> Stripe's (duplicate | fraudulent | requested_by_customer); the rest go without one
STRIPE_REASONS: dict[str, Literal["duplicate", "requested_by_customer"]] = {
    "superseded": "duplicate",
    "staff": "requested_by_customer",
}


@dataclass(frozen=True)
class RefundSent:
    """What sending one refund did: sent (Stripe accepted it; confirmation follows), failed (Stripe refused
    it; the refund is marked failed), deferred (no answer, a 5xx, a key problem: still pending, reconcile
    retries it with the same key)."""

    refund_id: int
    state: Literal["sent", "failed", "deferred"]
    stripe_refund_id: str | None = None
    stripe_status: str | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None


async def _payment_intent(
    store: PaymentStore, client: stripe.StripeClient, refund: Mapping[str, Any], request_id: str
) -> str | None:
    """The payment intent to refund: given, else the payment's, else its Checkout Session's."""
    intent = text(refund.get("payment_intent_id"))
    if intent:
        return intent
    async with store.transaction(request_id=request_id) as tx:
        payment = await tx.one("select billing.find_payment(null, null, %s)", [refund["payment_id"]])
    if payment is None:
        return None
    intent = text(payment.get("payment_intent_id"))
    session_id = text(payment.get("checkout_session_id"))
    if intent is None and session_id is not None:
        session = await client.v1.checkout.sessions.retrieve_async(session_id)
        intent = object_id(session.to_dict().get("payment_intent"))
    return intent


def refund_params(refund: Mapping[str, Any], refund_id: int, intent: str) -> RefundCreateParams:
    """The Stripe refund of one row: its amount, our ids in metadata, Stripe's reason when one fits."""
    params: RefundCreateParams = {
        "payment_intent": intent,
        "amount": int(refund["amount_minor"]),
        "metadata": {
            "refund_id": str(refund_id),
            "payment_id": str(refund["payment_id"]),
            "reason": str(refund.get("reason") or ""),
        },
    }
    stripe_reason_code = STRIPE_REASONS.get(str(refund.get("reason")))
    if stripe_reason_code:
        params["reason"] = stripe_reason_code
    return params


async def send_refund(
    store: PaymentStore,
    client: stripe.StripeClient,
    refund: Mapping[str, Any],
    *,
    request_id: str = "",
    claims: Mapping[str, Any] | None = None,
) -> RefundSent:
    """Sends one pending refund (a row of billing.pending_refunds, or a refund JSON) to Stripe."""
    refund_id = int(refund.get("refund_id") or refund["id"])
    key = str(refund["idempotency_key"])
    try:
        intent = await _payment_intent(store, client, refund, request_id)
    except stripe.StripeError as exc:
        return RefundSent(refund_id, "deferred", error=stripe_error_details(exc), reason=stripe_reason(exc))
    if intent is None:
        log.warning("refund %s: its payment has no payment intent yet; left pending", refund_id)
        return RefundSent(refund_id, "deferred", reason="no payment intent known yet")
    try:
        created = await client.v1.refunds.create_async(
            refund_params(refund, refund_id, intent), options={"idempotency_key": key}
        )
    except stripe.StripeError as exc:
        reason = stripe_reason(exc)
        if is_transient(exc):
            log.warning("refund %s deferred (%s); reconcile retries it with key %s", refund_id, reason, key)
            return RefundSent(refund_id, "deferred", error=stripe_error_details(exc), reason=reason)
        log.error("refund %s refused by Stripe: %s", refund_id, reason)
        async with store.transaction(claims=claims, request_id=request_id) as tx:
            await tx.one("select billing.mark_refund_failed(null, %s, %s)", [reason, refund_id])
        return RefundSent(refund_id, "failed", error=stripe_error_details(exc), reason=reason)
    async with store.transaction(claims=claims, request_id=request_id) as tx:
        await tx.one("select billing.attach_refund(%s, %s)", [refund_id, created.id])
    return RefundSent(refund_id, "sent", created.id, created.status)


async def send_refunds(
    store: PaymentStore,
    client: stripe.StripeClient,
    refunds: Iterable[Mapping[str, Any]],
    *,
    request_id: str = "",
) -> list[RefundSent]:
    """Sends each refund; a database or Stripe failure on one is logged and leaves it for reconcile."""
    results: list[RefundSent] = []
    for refund in refunds:
        if text(refund.get("stripe_refund_id")) or refund.get("status", "pending") != "pending":
            continue
        try:
            results.append(await send_refund(store, client, refund, request_id=request_id))
        except psycopg.Error as exc:  # PoolTimeout among them
            log.error("refund %s not recorded: %s; reconcile will resend it", refund.get("refund_id"), exc)
    return results


@dataclass(frozen=True)
class RefundAnswer:
    """The answer of POST /orders/{order_id}/refund: status, body and the headers the database set
    (Idempotent-Replayed on a replay)."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)


async def _request_refund(
    store: PaymentStore,
    order_id: int,
    amount: int | None,
    idempotency_key: str | None,
    *,
    role: str,
    claims: Mapping[str, Any],
    session: db.Identity | None,
    request_id: str,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """api.refund_order under the caller's role, and the response headers it set, in one transaction."""
    path = f"/orders/{order_id}/refund"
    try:
        async with store.transaction(
            role, claims, request_id=request_id, method="POST", path=path, session=session
        ) as tx:
            refund = dict(
                await tx.one("select api.refund_order(%s, %s, %s)", [order_id, amount, idempotency_key])
            )
            raw_headers = await tx.one("select pg_catalog.current_setting('response.headers', true)")
    except psycopg.Error as exc:
        raise database_failure(exc, authenticated=bool(claims.get("sub"))) from None
    return refund, response_headers(raw_headers)


def replayed(refund: Mapping[str, Any]) -> RefundSent | None:
    """What the first request did with a replayed refund, as far as the row tells; None while it was never
    sent (Stripe did not answer): then it is sent again, with its own key, so Stripe refunds once."""
    refund_id = int(refund["refund_id"])
    if refund.get("status") == "failed":
        return RefundSent(refund_id, "failed", reason=text(refund.get("failure_reason")) or "refused")
    stripe_refund_id = text(refund.get("stripe_refund_id"))
    if stripe_refund_id is None and refund.get("status") == "pending":
        return None
    return RefundSent(refund_id, "sent", stripe_refund_id, text(refund.get("status")))


async def refund_order(
    store: PaymentStore,
    client: stripe.StripeClient,
    order_id: int,
    amount: int | None,
    *,
    role: str,
    claims: Mapping[str, Any],
    session: db.Identity | None = None,
    request_id: str = "",
    idempotency_key: str | None = None,
) -> RefundAnswer:
    """Staff refund: api.refund_order under the caller's role (the database decides who may), then Stripe.

    202 with the pending refund (stripe_refund_id once Stripe accepted it; confirmed later by webhook);
    502 when Stripe refused it (the refund is marked failed, its amount refundable again). When Stripe
    cannot be reached the refund stays pending (202, stripe_refund_id null) and reconcile sends it. With an
    Idempotency-Key, a retry answers the first refund (Idempotent-Replayed: true) and sends nothing new.
    """
    refund, headers = await _request_refund(
        store,
        order_id,
        amount,
        idempotency_key,
        role=role,
        claims=claims,
        session=session,
        request_id=request_id,
    )
    sent = replayed(refund) if any(name == "Idempotent-Replayed" for name, _ in headers) else None
    if sent is None:
        try:
            sent = await send_refund(store, client, refund, request_id=request_id, claims=claims)
        except psycopg.Error as exc:
            # Stripe may have it; the row is pending and reconcile resends it with the same key
            log.error("refund %s: recording Stripe's answer failed: %s", refund["refund_id"], exc)
            sent = RefundSent(int(refund["refund_id"]), "deferred", reason="database unavailable")
    status, body = refund_answer(refund, sent)
    return RefundAnswer(status, body, headers)


def refund_answer(refund: Mapping[str, Any], sent: RefundSent) -> tuple[int, dict[str, Any]]:
    """202 and the refund as sent (or left for reconciliation); 502 when Stripe refused it."""
    if sent.state == "failed":
        raise ApiError(
            502,
            "CC502",
            f"Stripe refused the refund: {sent.reason}",
            details={**(sent.error or {}), "refund_id": sent.refund_id},
            hint="The refund is marked failed; its amount can be refunded again.",
        )
    body = {
        **refund,
        "stripe_refund_id": sent.stripe_refund_id,
        "stripe_status": sent.stripe_status,
        "sent": sent.state == "sent",
    }
    if sent.state == "deferred":
        body["retry"] = "Stripe did not answer; the refund stays pending and is resent by reconciliation."
    return 202, body


def refund_amount(body: Mapping[str, Any]) -> int | None:
    """The optional `amount` of POST /orders/{id}/refund: a positive whole number of minor units."""
    unknown = sorted(set(body) - {"amount"})
    if unknown:
        raise ApiError(
            400,
            "PGRST100",
            f'Unknown field {unknown[0]!r}; the body is {{"amount": <minor units>}} or empty.',
            details={"code": "unknown_argument", "field": unknown[0]},
        )
    value = body.get("amount")
    if value is None:
        return None
    amount = int_or_none(value) if not isinstance(value, str) else None
    if amount is None or amount <= 0:
        raise ApiError(
            422,
            "PT422",
            "amount must be a positive whole number of minor units.",
            details={"code": "invalid_input", "field": "amount", "value": value},
            hint="Leave the amount out to refund everything that is left.",
        )
    return amount
