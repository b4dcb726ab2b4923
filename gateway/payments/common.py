"""What the payment modules share: Stripe errors as API errors, the codes of billing errors, small JSON
helpers. (Database failures map through gateway.errors.database_failure, as every path's.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
import stripe

from gateway.errors import ApiError

log = logging.getLogger("commercecore.payments")


def stripe_error_details(exc: stripe.StripeError) -> dict[str, Any]:
    """What a client and the log may see of a Stripe error: never the request, never a key."""
    error = exc.error
    return {
        "code": "stripe_unreachable" if is_unreachable(exc) else "stripe_error",
        "stripe_type": getattr(error, "type", None) if error is not None else None,
        "stripe_code": exc.code,
        "stripe_status": exc.http_status,
        "stripe_request_id": exc.request_id,
    }


def stripe_reason(exc: stripe.StripeError) -> str:
    """A one-line reason for payments.failure_reason / refunds.failure_reason."""
    kind = "stripe_unreachable" if is_unreachable(exc) else f"stripe_{exc.http_status or 'error'}"
    message = (exc.user_message or str(exc) or type(exc).__name__).strip().splitlines()[0]
    return f"{kind}: {message}"[:500]


def is_unreachable(exc: stripe.StripeError) -> bool:
    """Stripe could not be reached at all (after the SDK's retries), as opposed to an answered error."""
    return isinstance(exc, stripe.APIConnectionError)


def is_transient(exc: stripe.StripeError) -> bool:
    """Worth retrying later with the same idempotency key: no answer, 5xx, rate limit, lock conflicts."""
    if is_unreachable(exc) or isinstance(exc, stripe.RateLimitError):
        return True
    # a wrong or revoked key is a configuration problem: keep the work for when it is fixed
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return True
    status = exc.http_status or 0
    return status >= 500 or status == 409


def upstream_error(exc: stripe.StripeError, action: str) -> ApiError:
    """502 when Stripe answered with an error, 503 when it could not be reached."""
    details = stripe_error_details(exc)
    if is_unreachable(exc):
        return ApiError(
            503,
            "CC503",
            f"Stripe could not be reached to {action}; nothing was charged. Retry shortly.",
            details=details,
            hint="The order is unchanged and can be paid with a new checkout.",
            headers={"Retry-After": "5"},
        )
    return ApiError(
        502,
        "CC502",
        f"Stripe refused to {action}: {exc.user_message or 'error'}",
        details=details,
        hint="The order is unchanged and can be paid with a new checkout.",
    )


def error_code(exc: psycopg.Error) -> str | None:
    """The machine `code` a billing function put in its error DETAIL."""
    text = exc.diag.message_detail or ""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    code = value.get("code") if isinstance(value, dict) else None
    return code if isinstance(code, str) else None


def is_business_error(exc: psycopg.Error) -> bool:
    """A PTxyz error raised by a function on purpose (4xx): a permanent answer, not an outage."""
    state = exc.sqlstate or ""
    return state.startswith("PT4")


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def object_id(value: Any) -> str | None:
    """An expandable Stripe field: the id string, or the id of the expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        return text(value.get("id"))
    return None


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
