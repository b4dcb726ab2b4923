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

import datetime
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
import stripe
from psycopg_pool import PoolTimeout

from gateway.errors import ApiError
from gateway.payments import transitions as tr
from gateway.payments.common import db_error, error_code, log, stripe_reason, text, upstream_error
from gateway.payments.config import PaymentSettings
from gateway.payments.refunds import send_refunds
from gateway.payments.store import PaymentStore

if TYPE_CHECKING:
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


def _mark_failed(
    store: PaymentStore, payment_id: int, reason: str, claims: Mapping[str, Any], rid: str
) -> None:
    try:
        with store.transaction(claims=claims, request_id=rid) as tx:
            tr.close(tx, payment_id, "failed", reason)
    except (psycopg.Error, PoolTimeout) as exc:
        # it stays `created` without a session; reconcile closes it
        log.error("payment %s: could not record the failure (%s): %s", payment_id, reason, exc)


def _expire_quietly(client: stripe.StripeClient, session_id: str) -> None:
    try:
        client.v1.checkout.sessions.expire(session_id)
    except stripe.StripeError as exc:
        log.warning("checkout session %s could not be expired: %s", session_id, stripe_reason(exc))


def close_previous(
    store: PaymentStore,
    client: stripe.StripeClient,
    previous_open: Sequence[Mapping[str, Any]],
    *,
    attempt: int,
    claims: Mapping[str, Any],
    request_id: str = "",
) -> list[dict[str, Any]]:
    """Expire the older open attempts' sessions at Stripe and close them (canceled: superseded). A session
    Stripe will not expire (already complete or expired) is applied as it is; one Stripe cannot be asked
    about stays open for webhooks and reconcile. Returns the refunds to send."""
    refunds: list[dict[str, Any]] = []
    reason = f"superseded by attempt {attempt}"
    for previous in previous_open:
        payment_id = int(previous["payment_id"])
        session_id = text(previous.get("checkout_session_id"))
        session: dict[str, Any] | None = None
        if session_id is not None:
            try:
                session = client.v1.checkout.sessions.expire(session_id).to_dict()
            except stripe.InvalidRequestError:
                # not open any more: paid, or expired already; ask what it is
                try:
                    session = client.v1.checkout.sessions.retrieve(session_id).to_dict()
                except stripe.StripeError as exc:
                    log.warning("session %s of payment %s: %s", session_id, payment_id, stripe_reason(exc))
                    continue
            except stripe.StripeError as exc:
                log.warning(
                    "session %s of payment %s not expired: %s", session_id, payment_id, stripe_reason(exc)
                )
                continue
        try:
            with store.transaction(claims=claims, request_id=request_id) as tx:
                if session is None or session.get("status") == "expired":
                    result = tr.guarded(tx, tr.close, payment_id, "canceled", reason)
                else:
                    result = tr.guarded(tx, tr.apply_session, payment_id, session)
            refunds.extend(result.refunds)
        except (psycopg.Error, PoolTimeout) as exc:
            log.error("payment %s not closed: %s", payment_id, exc)
            continue
        if session_id is None and result.checkout_session_id is not None:
            # a concurrent checkout attached its session between begin_payment and the cancel: the
            # attempt is closed now, so its session must not stay payable
            _expire_quietly(client, result.checkout_session_id)
    return refunds


def start_checkout(
    store: PaymentStore,
    client: stripe.StripeClient,
    settings: PaymentSettings,
    order_id: int,
    *,
    claims: Mapping[str, Any],
    session: tuple[str, int, str] | None = None,
    request_id: str = "",
    now: datetime.datetime | None = None,
) -> CheckoutResult:
    """Start paying an order; raises ApiError (the error shape, docs/http-api.md section 4) on any refusal,
    and gateway.db.SessionInactive when `session` (jti, user id, role) is no longer active."""
    if not claims.get("sub") or claims.get("role") not in ("app_readwrite", "app_admin"):
        raise ApiError(
            401,
            "PGRST301",
            "Sign in to pay an order.",
            details={"code": "not_authenticated"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    path = f"/orders/{order_id}/checkout"
    try:
        with store.transaction(
            claims=claims, request_id=request_id, method="POST", path=path, session=session
        ) as tx:
            attempt = dict(tx.one("select billing.begin_payment(%s)", [order_id]))
    except (psycopg.Error, PoolTimeout) as exc:
        raise db_error(exc) from None
    payment_id = int(attempt["payment_id"])

    refunds = close_previous(
        store,
        client,
        attempt.get("previous_open") or [],
        attempt=int(attempt["attempt"]),
        claims=claims,
        request_id=request_id,
    )
    if refunds:
        send_refunds(store, client, refunds, request_id=request_id)

    params = session_params(attempt, settings, now or datetime.datetime.now(datetime.UTC))
    try:
        created = client.v1.checkout.sessions.create(
            # one call per attempt (a new checkout is a new attempt), retried by the SDK with this key; the
            # random part keeps it from meeting a key Stripe remembers from a payment id this database no
            # longer has (a restore to an earlier point, another installation on the same account)
            params,
            options={"idempotency_key": f"checkout_{payment_id}_{secrets.token_hex(8)}"},
        )
    except stripe.StripeError as exc:
        reason = stripe_reason(exc)
        log.warning("checkout of order %s (payment %s) failed: %s", order_id, payment_id, reason)
        _mark_failed(store, payment_id, reason, claims, request_id)
        raise upstream_error(exc, "create the checkout session") from None
    if not created.url:
        _expire_quietly(client, created.id)
        _mark_failed(store, payment_id, "stripe returned a session without a url", claims, request_id)
        raise ApiError(
            502,
            "CC502",
            "Stripe returned a checkout session without a URL.",
            details={"code": "stripe_error"},
        )
    expires_at = datetime.datetime.fromtimestamp(created.expires_at, datetime.UTC)
    try:
        with store.transaction(claims=claims, request_id=request_id, method="POST", path=path) as tx:
            tx.one(
                "select billing.attach_checkout_session(%s, %s, %s, %s)",
                [payment_id, created.id, created.url, expires_at],
            )
    except (psycopg.Error, PoolTimeout) as exc:
        # nobody has the session's url: expire it so it can never be paid; the attempt stays without a
        # session (or was closed meanwhile by a newer attempt) and reconcile closes it
        code = error_code(exc) if isinstance(exc, psycopg.Error) else None
        log.warning(
            "payment %s: session %s not attached (%s); expiring it", payment_id, created.id, code or exc
        )
        _expire_quietly(client, created.id)
        if code == "payment_not_open":
            raise ApiError(
                409,
                "PT409",
                "This checkout was superseded by a newer one for the same order.",
                details={"code": "checkout_superseded", "payment_id": payment_id},
                hint="Use the checkout_url of the newest checkout.",
            ) from None
        raise db_error(exc) from None
    return CheckoutResult(payment_id, created.url, expires_at)
