"""The stand-in's objects and rules: Checkout Sessions, PaymentIntents, Charges, Refunds and Events, with
Stripe's shapes, errors and idempotency. Everything runs on the app's event loop without awaiting inside a
change, so each API call is atomic."""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe

API_VERSION: str = getattr(stripe, "api_version", None) or "2026-10-28.endive"
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
MIN_SESSION_TTL = 30 * 60
MAX_SESSION_TTL = 24 * 60 * 60
DEFAULT_SESSION_TTL = MAX_SESSION_TTL


def account_of(api_key: str) -> str:
    """How logs name the account of an API key (never the key itself)."""
    return "acct_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class StripeFailure(Exception):
    """An error answered in Stripe's format. `saved`: whether an idempotent replay returns it too (Stripe
    saves results once an endpoint started executing, not for parameter validation failures)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.saved = saved

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "code": self.code, "message": self.message, "param": self.param}}


def invalid(message: str, param: str | None = None, code: str | None = "parameter_invalid") -> StripeFailure:
    return StripeFailure(400, message, code=code, param=param, saved=False)


def missing(param: str) -> StripeFailure:
    return StripeFailure(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param, saved=False
    )


def not_found(kind: str, object_id: str, param: str = "id") -> StripeFailure:
    return StripeFailure(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _int(params: Mapping[str, Any], name: str, *, required: bool = False, minimum: int = 0) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise missing(name)
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.lstrip("-").isdigit():
        value = int(raw)
    else:
        raise invalid(f"Invalid integer: {raw}", name)
    if value < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", name)
    return value


def _metadata(params: Mapping[str, Any], name: str = "metadata") -> dict[str, str]:
    raw = params.get(name)
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise invalid("Invalid object", name)
    if len(raw) > 50:
        raise invalid("Metadata can have at most 50 keys.", name)
    return {str(k): str(v) for k, v in raw.items()}


def money(amount: int, currency: str) -> str:
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole}.{cents:02d} {currency.upper()}"


def _payment_mode_success_url(params: Mapping[str, Any]) -> Any:
    """The stand-in serves `mode=payment` only; returns its success_url."""
    mode = params.get("mode")
    if not mode:
        raise missing("mode")
    if mode != "payment":
        raise invalid(f"The stand-in supports mode=payment only, not {mode!r}.", "mode")
    success_url = params.get("success_url")
    if not success_url:
        raise missing("success_url")
    return success_url


def _session_lines(lines: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The line items of a session (price_data only, one currency) as Stripe lists them, and the currency."""
    if not lines:
        raise invalid(
            "You must provide at least one line item in `payment` mode.", "line_items", "parameter_missing"
        )
    if not isinstance(lines, list):
        raise invalid("Invalid array", "line_items")
    currency: str | None = None
    stored: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        item = _line_item(f"line_items[{index}]", line, currency)
        currency = item["currency"]
        stored.append(item)
    return currency, stored


def _line_item(where: str, line: Any, session_currency: str | None) -> dict[str, Any]:
    if not isinstance(line, dict):
        raise invalid("Invalid object", where)
    if line.get("price"):
        raise not_found("price", str(line["price"]), f"{where}[price]")
    price = line.get("price_data")
    if not isinstance(price, dict):
        raise invalid("You must specify either `price` or `price_data`.", where, "parameter_missing")
    currency = str(price.get("currency") or "")
    if not currency:
        raise missing(f"{where}[price_data][currency]")
    if currency != currency.lower() or len(currency) != 3 or not currency.isalpha():
        raise invalid(f"Invalid currency: {currency}.", f"{where}[price_data][currency]")
    if session_currency is not None and currency != session_currency:
        raise invalid("All line items must have the same currency.", "line_items")
    unit_amount = _int(price, "unit_amount", required=True)
    product = price.get("product_data")
    if not isinstance(product, dict) or not product.get("name"):
        raise missing(f"{where}[price_data][product_data][name]")
    quantity = _int(line, "quantity", required=True, minimum=1)
    assert unit_amount is not None
    assert quantity is not None
    return {
        "id": new_id("li"),
        "object": "item",
        "amount_subtotal": unit_amount * quantity,
        "amount_total": unit_amount * quantity,
        "currency": currency,
        "description": str(product["name"]),
        "quantity": quantity,
        "price": {"object": "price", "unit_amount": unit_amount, "currency": currency},
    }


def _session_expiry(params: Mapping[str, Any], created: int) -> int:
    """`expires_at`, between 30 minutes and 24 hours after creation (Stripe's bounds); 24 hours if absent."""
    expires_at = _int(params, "expires_at")
    if expires_at is None:
        return created + DEFAULT_SESSION_TTL
    if expires_at < created + MIN_SESSION_TTL:
        raise invalid(
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
            "expires_at",
        )
    if expires_at > created + MAX_SESSION_TTL:
        raise invalid(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            "expires_at",
        )
    return expires_at


@dataclass
class IdempotentResult:
    fingerprint: str
    status: int
    body: dict[str, Any]
    request_id: str


@dataclass
class Failure:
    """A scripted answer for the next API requests (fail_next)."""

    remaining: int
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    message: str = "An unexpected error occurred (stand-in: fail_next)."


@dataclass
class Endpoint:
    """A webhook endpoint: where an account's events go, and whether delivery is on."""

    url: str | None
    enabled: bool = True


@dataclass
class StandinState:
    """All objects, by id, plus the event log and the request log.

    Webhook endpoints belong to accounts, as at Stripe: `endpoints[account]`, and `webhook_url` (the
    command line's --webhook-url) for every account without its own."""

    webhook_secret: str
    webhook_url: str | None = None
    delivery_enabled: bool = True
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    api_key: str | None = None  # None: any test key (sk_test_... / rk_test_...)
    base_url: str = "http://127.0.0.1"
    refund_mode: str = "succeed"  # succeed | pending
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    session_lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    session_intent_metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotentResult] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    # the account (account_of(api key)) each object belongs to: another account's object is a 404
    owners: dict[str, str] = field(default_factory=dict)
    failure: Failure | None = None
    # called with each new event id (the app queues it for delivery)
    on_event: Callable[[str], None] | None = None
    # the API request being served (for event.request)
    current_request: dict[str, Any] | None = None
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())

    def endpoint(self, account: str | None) -> Endpoint:
        """The endpoint of an account's events (its own, else the default one)."""
        own = self.endpoints.get(account or "")
        return own if own is not None else Endpoint(self.webhook_url, self.delivery_enabled)

    def event_account(self, event: Mapping[str, Any]) -> str | None:
        obj = event["data"]["object"]
        return self.owners.get(str(obj.get("id")))

    def _own(self, object_id: str) -> None:
        account = (self.current_request or {}).get("account")
        if account:
            self.owners[object_id] = account

    def _visible(self, object_id: str) -> bool:
        """API calls see their own account's objects; the controls and the pay page see all."""
        account = (self.current_request or {}).get("account")
        return not account or self.owners.get(object_id, account) == account

    # -- events ------------------------------------------------------------------------------------

    def emit(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        request = self.current_request or {}
        event_id = new_id("evt")
        endpoint = self.endpoint(self.owners.get(str(obj.get("id"))))
        event: dict[str, Any] = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": {"object": copy.deepcopy(dict(obj))},
            "livemode": False,
            "pending_webhooks": 1 if endpoint.enabled and endpoint.url else 0,
            "request": {"id": request.get("id"), "idempotency_key": request.get("idempotency_key")},
            "type": kind,
        }
        self.events[event_id] = event
        self.deliveries[event_id] = []
        if self.on_event is not None:
            self.on_event(event_id)
        return event

    # -- checkout sessions -------------------------------------------------------------------------

    def create_session(self, params: Mapping[str, Any]) -> dict[str, Any]:
        success_url = _payment_mode_success_url(params)
        currency, stored_lines = _session_lines(params.get("line_items"))
        created = self.now()
        expires_at = _session_expiry(params, created)
        intent_data = params.get("payment_intent_data") or {}
        if not isinstance(intent_data, dict):
            raise invalid("Invalid object", "payment_intent_data")
        session_id = new_id("cs_test")
        total = sum(int(line["amount_total"]) for line in stored_lines)
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": created,
            "currency": currency,
            "customer": None,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "livemode": False,
            "metadata": _metadata(params),
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": ["card", "sepa_debit"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": success_url,
            "ui_mode": "hosted",
            "url": f"{self.base_url}/pay/{session_id}",
        }
        self.sessions[session_id] = session
        self._own(session_id)
        self.session_lines[session_id] = stored_lines
        self.session_intent_metadata[session_id] = _metadata(intent_data)
        return session

    def session(self, session_id: str) -> dict[str, Any]:
        found = self.sessions.get(session_id)
        if found is None or not self._visible(session_id):
            raise not_found("checkout.session", session_id, "session")
        self.expire_if_due(found)
        return found

    def expire_if_due(self, session: dict[str, Any]) -> None:
        if session["status"] == "open" and self.now() >= int(session["expires_at"]):
            self._expire(session)

    def expire_due(self) -> int:
        due = [
            s for s in self.sessions.values() if s["status"] == "open" and self.now() >= int(s["expires_at"])
        ]
        for session in due:
            self._expire(session)
        return len(due)

    def _expire(self, session: dict[str, Any]) -> None:
        session["status"] = "expired"
        session["url"] = None
        intent = self.intents.get(str(session.get("payment_intent") or ""))
        if intent is not None and intent["status"] not in ("succeeded", "canceled"):
            intent["status"] = "canceled"
        self.emit("checkout.session.expired", session)

    def expire_session(self, session_id: str) -> dict[str, Any]:
        session = self.session(session_id)
        if session["status"] != "open":
            raise StripeFailure(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session '
                f'has a status of "{session["status"]}".',
            )
        self._expire(session)
        return session

    def _open_session(self, session_id: str) -> dict[str, Any]:
        session = self.session(session_id)
        if session["status"] != "open":
            raise StripeFailure(
                409, f"This Checkout Session is {session['status']}.", code="session_not_open"
            )
        return session

    def _intent_for(self, session: dict[str, Any], method: str) -> dict[str, Any]:
        intent = self.intents.get(str(session.get("payment_intent") or ""))
        if intent is None:
            intent = {
                "id": new_id("pi"),
                "object": "payment_intent",
                "amount": session["amount_total"],
                "amount_received": 0,
                "currency": session["currency"],
                "created": self.now(),
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": dict(self.session_intent_metadata.get(session["id"], {})),
                "payment_method_types": [method],
                "status": "requires_payment_method",
            }
            self.intents[intent["id"]] = intent
            self.owners[intent["id"]] = self.owners.get(session["id"], "")
            session["payment_intent"] = intent["id"]
        intent["payment_method_types"] = [method]
        return intent

    def _succeed_intent(self, intent: dict[str, Any]) -> dict[str, Any]:
        charge = {
            "id": new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "captured": True,
            "created": self.now(),
            "currency": intent["currency"],
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "paid": True,
            "payment_intent": intent["id"],
            "refunded": False,
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": ""},
            "status": "succeeded",
        }
        charge["refunds"]["url"] = f"/v1/charges/{charge['id']}/refunds"
        self.charges[charge["id"]] = charge
        self.owners[charge["id"]] = self.owners.get(intent["id"], "")
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=charge["id"],
            last_payment_error=None,
        )
        return charge

    def pay(self, session_id: str, *, delayed: bool = False) -> dict[str, Any]:
        """The customer pays: by card (paid now) or by a delayed method (bank debit: complete, unpaid)."""
        session = self._open_session(session_id)
        intent = self._intent_for(session, "sepa_debit" if delayed else "card")
        session["status"] = "complete"
        session["url"] = None
        if delayed:
            intent["status"] = "processing"
            self.emit("checkout.session.completed", session)
            return session
        charge = self._succeed_intent(intent)
        session["payment_status"] = "paid"
        self.emit("charge.succeeded", charge)
        self.emit("payment_intent.succeeded", intent)
        self.emit("checkout.session.completed", session)
        return session

    def _processing(self, session_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        session = self.session(session_id)
        intent = self.intents.get(str(session.get("payment_intent") or ""))
        if session["status"] != "complete" or intent is None or intent["status"] != "processing":
            raise StripeFailure(
                409, "This Checkout Session has no delayed payment in progress.", code="not_processing"
            )
        return session, intent

    def async_succeed(self, session_id: str) -> dict[str, Any]:
        session, intent = self._processing(session_id)
        charge = self._succeed_intent(intent)
        session["payment_status"] = "paid"
        self.emit("charge.succeeded", charge)
        self.emit("payment_intent.succeeded", intent)
        self.emit("checkout.session.async_payment_succeeded", session)
        return session

    def async_fail(self, session_id: str) -> dict[str, Any]:
        session, intent = self._processing(session_id)
        intent.update(
            status="requires_payment_method",
            last_payment_error={
                "code": "payment_method_provider_decline",
                "message": "The bank debit was refused.",
                "type": "card_error",
            },
        )
        self.emit("payment_intent.payment_failed", intent)
        self.emit("checkout.session.async_payment_failed", session)
        return session

    def decline(self, session_id: str, *, delayed: bool = False) -> dict[str, Any]:
        """A refused payment: a card decline leaves the session open (the customer may try another card);
        a delayed method completes the session and then fails it (async_payment_failed)."""
        if delayed:
            self.pay(session_id, delayed=True)
            return self.async_fail(session_id)
        session = self._open_session(session_id)
        intent = self._intent_for(session, "card")
        intent.update(
            status="requires_payment_method",
            last_payment_error={
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "type": "card_error",
            },
        )
        self.emit("payment_intent.payment_failed", intent)
        return session

    # -- refunds -------------------------------------------------------------------------------------

    def create_refund(self, params: Mapping[str, Any]) -> dict[str, Any]:
        charge = self._refundable_charge(params)
        amount = self._refund_amount(charge, params)
        reason = params.get("reason") or None
        if reason is not None and reason not in REFUND_REASONS:
            raise invalid(f"Invalid reason: must be one of {', '.join(sorted(REFUND_REASONS))}", "reason")
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": None,
            "charge": charge["id"],
            "created": self.now(),
            "currency": charge["currency"],
            "failure_reason": None,
            "metadata": _metadata(params),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "pending",
        }
        self.refunds[refund["id"]] = refund
        self._own(refund["id"])
        if self.refund_mode == "pending":
            self.emit("refund.created", refund)
            return refund
        return self.settle_refund(refund["id"], succeed=True, created=True)

    def _refundable_charge(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The charge a refund names, directly or by its PaymentIntent's latest successful charge."""
        charge_id = params.get("charge")
        intent_id = params.get("payment_intent")
        if not charge_id and not intent_id:
            raise invalid("One of `charge` or `payment_intent` is required.", None, "parameter_missing")
        if intent_id:
            intent = self.intents.get(str(intent_id))
            if intent is None or not self._visible(str(intent_id)):
                raise not_found("payment_intent", str(intent_id), "payment_intent")
            if not intent.get("latest_charge") or intent["status"] != "succeeded":
                raise StripeFailure(
                    400,
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                    code="charge_not_refundable",
                    param="payment_intent",
                )
            charge_id = intent["latest_charge"]
        charge = self.charges.get(str(charge_id))
        if charge is None or not self._visible(str(charge_id)):
            raise not_found("charge", str(charge_id), "charge")
        return charge

    def _refund_amount(self, charge: dict[str, Any], params: Mapping[str, Any]) -> int:
        """The amount asked (default: all that is left), at most what is neither refunded nor pending."""
        reserved = sum(
            int(r["amount"])
            for r in self.refunds.values()
            if r["charge"] == charge["id"] and r["status"] == "pending"
        )
        remaining = int(charge["amount"]) - int(charge["amount_refunded"]) - reserved
        if remaining <= 0:
            raise StripeFailure(
                400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
            )
        amount = _int(params, "amount", minimum=1)
        amount = remaining if amount is None else amount
        if amount > remaining:
            raise StripeFailure(
                400,
                f"Refund amount ({money(amount, charge['currency'])}) is greater than unrefunded amount on "
                f"charge ({money(remaining, charge['currency'])})",
                code="amount_too_large",
                param="amount",
            )
        return amount

    def refund(self, refund_id: str) -> dict[str, Any]:
        found = self.refunds.get(refund_id)
        if found is None or not self._visible(refund_id):
            raise not_found("refund", refund_id, "refund")
        return found

    def settle_refund(self, refund_id: str, *, succeed: bool, created: bool = False) -> dict[str, Any]:
        refund = self.refund(refund_id)
        if refund["status"] != "pending":
            raise StripeFailure(409, f"Refund {refund_id} is {refund['status']}.", code="refund_not_pending")
        charge = self.charges[refund["charge"]]
        if succeed:
            refund["status"] = "succeeded"
            charge["amount_refunded"] = int(charge["amount_refunded"]) + int(refund["amount"])
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            listed = charge["refunds"]
            listed["data"].insert(0, copy.deepcopy(refund))
            listed["total_count"] = len(listed["data"])
            self.emit("refund.created" if created else "refund.updated", refund)
            self.emit("charge.refunded", charge)
        else:
            refund["status"] = "failed"
            refund["failure_reason"] = "expired_or_canceled_card"
            self.emit("refund.updated", refund)
            self.emit("refund.failed", refund)
        return refund

    def payment_intent(self, intent_id: str) -> dict[str, Any]:
        found = self.intents.get(intent_id)
        if found is None or not self._visible(intent_id):
            raise not_found("payment_intent", intent_id, "intent")
        return found

    def charge(self, charge_id: str) -> dict[str, Any]:
        found = self.charges.get(charge_id)
        if found is None or not self._visible(charge_id):
            raise not_found("charge", charge_id, "charge")
        return found

    # -- idempotency ----------------------------------------------------------------------------------

    @staticmethod
    def fingerprint(method: str, path: str, params: Mapping[str, Any]) -> str:
        canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
