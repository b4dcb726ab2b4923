"""POST /orders/{order_id}/checkout: a new payment attempt, then its Stripe Checkout Session.

1. billing.begin_payment commits the attempt first (as app_payments with the customer's claims, so the
   database checks the order is theirs and payable);
2. the order's older open attempts are expired at Stripe and closed (a session already paid is applied:
   the success of a superseded attempt is refunded automatically);
3. sessions.create with idempotency key checkout_<payment_id> (the SDK retries with the same key);
4. billing.attach_checkout_session. A Stripe error marks the attempt failed: 502 (Stripe answered) or 503
   (unreachable), the order stays payable.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
import stripe

from gateway import db
from gateway.errors import ApiError, database_failure
from gateway.payments import transitions as tr
from gateway.payments.common import error_code, log, stripe_reason, text, upstream_error
from gateway.payments.config import PaymentSettings
from gateway.payments.refunds import send_refunds
from gateway.payments.store import PaymentStore, Tx

if TYPE_CHECKING:
    from stripe.checkout import Session
    from stripe.params.checkout import SessionCreateParams, SessionCreateParamsLineItem


@dataclass(frozen=True)
class CheckoutResult:
    payment_id: int
    checkout_url: str
    expires_at: datetime.datetime

    def body(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "checkout_url": self.checkout_url,
            "expires_at": self.expires_at.isoformat(),
        }


def session_params(
    attempt: Mapping[str, Any], settings: PaymentSettings, now: datetime.datetime
) -> SessionCreateParams:
    """The Checkout Session of an attempt: the order's price snapshots as line items, our ids in
    client_reference_id and metadata (also on the payment intent), success/cancel pages, expiry."""
    order_id, payment_id = int(attempt["order_id"]), int(attempt["payment_id"])
    currency = str(attempt["currency"]).lower()
    metadata = {"order_id": str(order_id), "payment_id": str(payment_id), "attempt": str(attempt["attempt"])}
    items: Sequence[Mapping[str, Any]] = attempt.get("items") or []
    line_items: list[SessionCreateParamsLineItem] = [
        {
            "quantity": int(item["quantity"]),
            "price_data": {
                "currency": currency,
                "unit_amount": int(item["unit_price_minor"]),
                "product_data": {
                    "name": str(item.get("name") or f"Product {item['product_id']}"),
                    "metadata": {"product_id": str(item["product_id"])},
                },
            },
        }
        for item in items
    ]
    lines_total = sum(int(i["quantity"]) * int(i["unit_price_minor"]) for i in items)
    if lines_total != int(attempt["amount_minor"]):
        # cannot happen while totals are computed from the items; charge the attempt's amount regardless
        line_items = [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency,
                    "unit_amount": int(attempt["amount_minor"]),
                    "product_data": {"name": f"Order {order_id}"},
                },
            }
        ]
    base = settings.public_base_url
    return {
        "mode": "payment",
        "line_items": line_items,
        "client_reference_id": str(payment_id),
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "success_url": f"{base}/checkout/success?order_id={order_id}&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base}/checkout/cancel?order_id={quote(str(order_id))}",
        "expires_at": int((now + settings.checkout_ttl).timestamp()),
    }


@dataclass(frozen=True)
class Checkout:
    """One checkout in progress: the order, the caller (claims, and the session to check) and the request."""

    store: PaymentStore
    client: stripe.StripeClient
    order_id: int
    claims: Mapping[str, Any]
    session: db.Identity | None = None
    request_id: str = ""

    @property
    def path(self) -> str:
        return f"/orders/{self.order_id}/checkout"

    def transaction(self, *, checked: bool = False) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A transaction of this request as app_payments with the caller's claims; `checked`: the caller's
        session is checked first."""
        return self.store.transaction(
            claims=self.claims,
            request_id=self.request_id,
            method="POST",
            path=self.path,
            session=self.session if checked else None,
        )


async def _mark_failed(checkout: Checkout, payment_id: int, reason: str) -> None:
    store, claims, rid = checkout.store, checkout.claims, checkout.request_id
    try:
        async with store.transaction(claims=claims, request_id=rid) as tx:
            await tr.close(tx, payment_id, "failed", reason)
    except psycopg.Error as exc:  # PoolTimeout among them
        # it stays `created` without a session; reconcile closes it
        log.error("payment %s: could not record the failure (%s): %s", payment_id, reason, exc)


async def _expire_quietly(client: stripe.StripeClient, session_id: str) -> None:
    try:
        await client.v1.checkout.sessions.expire_async(session_id)
    except stripe.StripeError as exc:
        log.warning("checkout session %s could not be expired: %s", session_id, stripe_reason(exc))


async def _session_now(
    client: stripe.StripeClient, payment_id: int, session_id: str
) -> tuple[bool, dict[str, Any] | None]:
    """An older attempt's session, expired at Stripe if it was still open: (known, the session). A session
    Stripe will not expire (already complete or expired) is retrieved as it is; (False, None) when Stripe
    cannot be asked."""
    try:
        return True, (await client.v1.checkout.sessions.expire_async(session_id)).to_dict()
    except stripe.InvalidRequestError:
        # not open any more: paid, or expired already; ask what it is
        try:
            return True, (await client.v1.checkout.sessions.retrieve_async(session_id)).to_dict()
        except stripe.StripeError as exc:
            log.warning("session %s of payment %s: %s", session_id, payment_id, stripe_reason(exc))
    except stripe.StripeError as exc:
        log.warning("session %s of payment %s not expired: %s", session_id, payment_id, stripe_reason(exc))
    return False, None


async def _close_one(
    checkout: Checkout, previous: Mapping[str, Any], reason: str
) -> list[dict[str, Any]] | None:
    """Closes one older attempt (canceled: superseded) or applies its session as Stripe has it; the refunds
    to send, or None when it stays open (Stripe or the database could not be asked)."""
    payment_id = int(previous["payment_id"])
    session_id = text(previous.get("checkout_session_id"))
    session: dict[str, Any] | None = None
    if session_id is not None:
        known, session = await _session_now(checkout.client, payment_id, session_id)
        if not known:
            return None
    try:
        async with checkout.store.transaction(claims=checkout.claims, request_id=checkout.request_id) as tx:
            if session is None or session.get("status") == "expired":
                result = await tr.guarded(tx, tr.close, payment_id, "canceled", reason)
            else:
                result = await tr.guarded(tx, tr.apply_session, payment_id, session)
    except psycopg.Error as exc:
        log.error("payment %s not closed: %s", payment_id, exc)
        return None
    if session_id is None and result.checkout_session_id is not None:
        # a concurrent checkout attached its session between begin_payment and the cancel: the
        # attempt is closed now, so its session must not stay payable
        await _expire_quietly(checkout.client, result.checkout_session_id)
    return result.refunds


async def close_previous(
    checkout: Checkout, previous_open: Sequence[Mapping[str, Any]], *, attempt: int
) -> list[dict[str, Any]]:
    """Expire the older open attempts' sessions at Stripe and close them (canceled: superseded). A session
    Stripe will not expire (already complete or expired) is applied as it is; one Stripe cannot be asked
    about stays open for webhooks and reconcile. Returns the refunds to send."""
    refunds: list[dict[str, Any]] = []
    reason = f"superseded by attempt {attempt}"
    for previous in previous_open:
        refunds.extend(await _close_one(checkout, previous, reason) or [])
    return refunds


def _require_customer(claims: Mapping[str, Any]) -> None:
    if not claims.get("sub") or claims.get("role") not in ("app_readwrite", "app_admin"):
        raise ApiError(
            401,
            "PGRST301",
            "Sign in to pay an order.",
            details={"code": "not_authenticated"},
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _begin(checkout: Checkout) -> dict[str, Any]:
    """billing.begin_payment, committed, after the caller's session check: the new attempt."""
    try:
        async with checkout.transaction(checked=True) as tx:
            return dict(await tx.one("select billing.begin_payment(%s)", [checkout.order_id]))
    except psycopg.Error as exc:
        raise database_failure(exc, authenticated=True) from None


async def _create_session(
    checkout: Checkout, params: SessionCreateParams, payment_id: int
) -> tuple[Session, str]:
    """The Checkout Session at Stripe and its url; a refusal or no answer marks the attempt failed (502 /
    503), as does a session without a url (502)."""
    try:
        created = await checkout.client.v1.checkout.sessions.create_async(
            # one call per attempt (a new checkout is a new attempt), retried by the SDK with this key; the
            # random part keeps it from meeting a key Stripe remembers from a payment id this database no
            # longer has (a restore to an earlier point, another installation on the same account)
            params,
            options={"idempotency_key": f"checkout_{payment_id}_{secrets.token_hex(8)}"},
        )
    except stripe.StripeError as exc:
        reason = stripe_reason(exc)
        log.warning("checkout of order %s (payment %s) failed: %s", checkout.order_id, payment_id, reason)
        await _mark_failed(checkout, payment_id, reason)
        raise upstream_error(exc, "create the checkout session") from None
    if not created.url:
        await _expire_quietly(checkout.client, created.id)
        await _mark_failed(checkout, payment_id, "stripe returned a session without a url")
        raise ApiError(
            502,
            "CC502",
            "Stripe returned a checkout session without a URL.",
            details={"code": "stripe_error"},
        )
    return created, created.url


async def _attach(checkout: Checkout, payment_id: int, created: Session, url: str) -> datetime.datetime:
    """billing.attach_checkout_session; the session's expiry. When it cannot be recorded nobody has the
    session's url: it is expired at Stripe so it can never be paid (409 when a newer checkout closed the
    attempt meanwhile); the attempt stays without a session and reconcile closes it."""
    expires_at = datetime.datetime.fromtimestamp(created.expires_at, datetime.UTC)
    try:
        async with checkout.transaction() as tx:
            await tx.one(
                "select billing.attach_checkout_session(%s, %s, %s, %s)",
                [payment_id, created.id, url, expires_at],
            )
    except psycopg.Error as exc:
        code = error_code(exc)
        log.warning(
            "payment %s: session %s not attached (%s); expiring it", payment_id, created.id, code or exc
        )
        await _expire_quietly(checkout.client, created.id)
        if code == "payment_not_open":
            raise ApiError(
                409,
                "PT409",
                "This checkout was superseded by a newer one for the same order.",
                details={"code": "checkout_superseded", "payment_id": payment_id},
                hint="Use the checkout_url of the newest checkout.",
            ) from None
        raise database_failure(exc, authenticated=True) from None
    return expires_at


async def start_checkout(
    checkout: Checkout, settings: PaymentSettings, *, now: datetime.datetime | None = None
) -> CheckoutResult:
    """Start paying an order; raises ApiError (the error shape, docs/http-api.md section 4) on any refusal,
    and gateway.db.SessionInactive when the caller's session is no longer active."""
    _require_customer(checkout.claims)
    attempt = await _begin(checkout)
    payment_id = int(attempt["payment_id"])
    previous = attempt.get("previous_open") or []
    refunds = await close_previous(checkout, previous, attempt=int(attempt["attempt"]))
    if refunds:
        await send_refunds(checkout.store, checkout.client, refunds, request_id=checkout.request_id)
    params = session_params(attempt, settings, now or datetime.datetime.now(datetime.UTC))
    created, url = await _create_session(checkout, params, payment_id)
    expires_at = await _attach(checkout, payment_id, created, url)
    return CheckoutResult(payment_id, url, expires_at)
