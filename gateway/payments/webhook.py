"""POST /webhooks/stripe: verify the signature on the raw body, store the event in the inbox and apply it in
the same transaction (as app_payments), acknowledge; then send the refunds the transition created.

- bad signature, stale timestamp (> tolerance), tampered body, not an event -> 400, nothing stored;
- a duplicate (redelivery, or a parallel delivery that waited for the first) -> 200, no second transition;
- a business refusal of a billing function (PT4xx) -> stored with outcome rejected:<code>, 200 (retrying
  cannot change the answer); a database outage -> 5xx and nothing stored, so Stripe retries;
- a refund of a payment intent no payment has yet (it overtook the payment's success) -> stored with
  outcome deferred:unknown_payment_intent, 200, and applied when the payment's success is recorded;
- an event whose `livemode` differs from the mode of STRIPE_SECRET_KEY (a live event at a shop on a test
  key, or the reverse) -> stored with outcome rejected:livemode_mismatch, 200 (another environment's event:
  a retry would be refused the same way), never applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import stripe

from gateway.errors import database_failure
from gateway.payments import transitions as tr
from gateway.payments.common import log, object_id, text
from gateway.payments.config import PaymentSettings
from gateway.payments.refunds import send_refunds
from gateway.payments.store import PaymentStore, Tx

SESSION_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    }
)
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
# recorded against their payment, no transition: Checkout lets the customer retry in the same session, and a
# success is reported by the session events
INTENT_EVENTS = frozenset(
    {"payment_intent.payment_failed", "payment_intent.succeeded", "payment_intent.canceled"}
)


@dataclass
class WebhookResult:
    status: int
    body: dict[str, Any]
    refunds: list[dict[str, Any]] = field(default_factory=list)


def bad_request(message: str, code: str) -> WebhookResult:
    return WebhookResult(
        400,
        {
            "code": "CC400",
            "message": message,
            "details": {"code": code},
            "hint": "Webhooks come from Stripe, signed with the endpoint's secret (STRIPE_WEBHOOK_SECRET).",
        },
    )


def verify(
    client: stripe.StripeClient, raw_body: bytes, signature: str | None, secret: str, tolerance: int
) -> dict[str, Any] | WebhookResult:
    """The verified event as a dict, or the 400 to answer."""
    try:
        client.construct_event(raw_body, signature, secret, tolerance)
        # the verified bytes themselves, not the SDK's objects (which hold Decimals for decimal strings)
        payload = json.loads(raw_body)
    except stripe.SignatureVerificationError as exc:
        stale = "tolerance" in str(exc)
        return bad_request(
            "The Stripe-Signature timestamp is too old."
            if stale
            else "The Stripe-Signature does not verify.",
            "stale_signature" if stale else "invalid_signature",
        )
    except ValueError:
        return bad_request("The body is not a Stripe event.", "invalid_payload")
    if not isinstance(payload, dict):
        return bad_request("The body is not a Stripe event.", "invalid_payload")
    event: dict[str, Any] = payload
    data = event.get("data")
    if (
        not isinstance(data, Mapping)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(data.get("object"), Mapping)
    ):
        return bad_request("The body is not a Stripe event.", "invalid_payload")
    return event


async def dispatch(tx: Tx, event: Mapping[str, Any]) -> tr.Transition:
    """The transition of one event (inside the inbox transaction)."""
    kind = str(event["type"])
    obj: Mapping[str, Any] = event["data"]["object"]
    if kind in SESSION_EVENTS:
        return await _session_event(tx, kind, obj)
    if kind in INTENT_EVENTS:
        payment = await tr.find_payment(
            tx,
            payment_intent_id=text(obj.get("id")),
            metadata=obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else None,
        )
        if payment is None:
            return tr.Transition("unknown_payment")
        return tr.Transition("recorded", int(payment["payment_id"]))
    if kind == "charge.refunded" or kind in REFUND_EVENTS:
        return await tr.apply_refund_event(tx, kind, obj)
    return tr.Transition("ignored")


async def _session_event(tx: Tx, kind: str, obj: Mapping[str, Any]) -> tr.Transition:
    payment = await tr.find_payment(
        tx,
        session_id=text(obj.get("id")),
        payment_intent_id=object_id(obj.get("payment_intent")),
        metadata=obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else None,
        client_reference_id=obj.get("client_reference_id"),
    )
    if payment is None:
        return tr.Transition("unknown_payment")
    payment_id = int(payment["payment_id"])
    if kind == "checkout.session.async_payment_failed":
        result = await tr.guarded(tx, tr.close, payment_id, "failed", "async_payment_failed")
    elif kind == "checkout.session.expired":
        result = await tr.guarded(tx, tr.close, payment_id, "expired")
    else:
        # completed / async_payment_succeeded: the session says whether the money is there
        result = await tr.guarded(tx, tr.apply_session, payment_id, obj)
    return _with_payment(result, payment_id)


def _with_payment(result: tr.Transition, payment_id: int) -> tr.Transition:
    if result.payment_id is None:
        result.payment_id = payment_id
    return result


async def _record(
    tx: Tx, event: Mapping[str, Any], settings: PaymentSettings
) -> tuple[WebhookResult, tr.Transition | None]:
    """The event into the inbox (billing.record_stripe_event) and, when it is new, its transition: the
    answer, and the transition applied (None for a duplicate or an event the inbox refused)."""
    event_id, kind = str(event["id"]), str(event["type"])
    created = event.get("created")
    inbox = await tx.one(
        "select billing.record_stripe_event(%s, %s, %s::jsonb, to_timestamp(%s), %s)",
        [event_id, kind, json.dumps(event), created if isinstance(created, int) else None, settings.livemode],
    )
    if inbox == "duplicate":
        return WebhookResult(200, {"received": True, "id": event_id, "duplicate": True}), None
    if inbox != "new":  # stored as rejected by the inbox: acknowledged, never applied
        log.warning("webhook %s (%s) not applied: %s", event_id, kind, inbox)
        body = {"received": True, "id": event_id, "duplicate": False, "outcome": inbox}
        return WebhookResult(200, body), None
    result = await dispatch(tx, event)
    await tx.one(
        "select billing.finish_stripe_event(%s, %s, %s)", [event_id, result.outcome, result.payment_id]
    )
    body = {"received": True, "id": event_id, "duplicate": False, "outcome": result.outcome}
    return WebhookResult(200, body, result.refunds), result


async def receive_event(
    store: PaymentStore,
    client: stripe.StripeClient,
    settings: PaymentSettings,
    raw_body: bytes,
    signature: str | None,
    *,
    request_id: str = "",
) -> WebhookResult:
    """Verify, store and apply one delivery; no call to Stripe (refunds to send are in the result)."""
    verified = verify(client, raw_body, signature, settings.webhook_secret, settings.webhook_tolerance)
    if isinstance(verified, WebhookResult):
        return verified
    try:
        async with store.transaction(request_id=request_id, method="POST", path="/webhooks/stripe") as tx:
            answer, applied = await _record(tx, verified, settings)
    except psycopg.Error as exc:  # PoolTimeout among them
        error = database_failure(exc, authenticated=True)
        if exc.sqlstate == "PT422":
            # the inbox refused the event itself (an id that is not evt_...): not Stripe's, not retryable
            return WebhookResult(400, error.body())
        log.error(
            "webhook %s (%s) not stored: %s",
            verified["id"],
            verified["type"],
            str(exc).strip() or type(exc).__name__,
        )
        return WebhookResult(error.status if error.status >= 500 else 500, error.body())
    if applied is not None:
        log.info("webhook %s (%s): %s", verified["id"], verified["type"], applied.outcome)
    return answer


async def handle_webhook(
    store: PaymentStore,
    client: stripe.StripeClient,
    settings: PaymentSettings,
    raw_body: bytes,
    signature: str | None,
    *,
    request_id: str = "",
) -> tuple[int, dict[str, Any]]:
    """One delivery, end to end: (HTTP status, JSON body). Refunds created by the transition are sent to
    Stripe after the commit, never inside the transaction; a failure leaves them pending for reconcile."""
    result = await receive_event(store, client, settings, raw_body, signature, request_id=request_id)
    if result.refunds:
        await send_refunds(store, client, result.refunds, request_id=request_id)
    return result.status, result.body
