"""The payment routes: `payment_routes()` for the gateway's route table (mount them before its catch-all).

POST /orders/{order_id}/checkout   customer (own order) or staff -> 201 {payment_id, checkout_url, expires_at}
POST /orders/{order_id}/refund     staff, {amount?}, Idempotency-Key? -> 202 the pending refund (Stripe
                                   confirms by webhook); a retry with the key answers the first refund
POST /webhooks/stripe              Stripe only (signature) -> 200 / 400
GET  /checkout/success, /checkout/cancel   where Stripe Checkout sends the customer back (PUBLIC_BASE_URL)

The handlers find `request.app.state.payments` (a PaymentService) and the caller on `request.state.auth`
(an AuthContext: role + claims; the gateway's db.Identity fits), else through
`PaymentService.authenticate(request)`; without either the caller is anonymous. Checkout and refund spend
the budgets of `request.app.state.budgets` (the gateway's gateway.throttle.Budgets) when there is one.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.errors import ApiError, unavailable
from gateway.http import read_body, read_json_object, request_id_from
from gateway.payments.refunds import refund_amount
from gateway.payments.service import AuthContext, PaymentService
from gateway.throttle import Budgets, client_key, user_account

__all__ = ["FRONTED_ROUTES", "Anonymous", "AuthContext", "payment_routes"]

log = logging.getLogger("commercecore.payments")

WEBHOOK_BODY_LIMIT = 1024 * 1024  # Stripe events are far smaller
JSON_BODY_LIMIT = 64 * 1024
# (method, path, api function) of the routes here that front an `api` function: the function declares no
# `@route` of its own (each route is declared once), and /openapi.json documents the route with the
# function's comment, arguments and result
FRONTED_ROUTES = (("POST", "/orders/{order_id}/refund", "refund_order"),)


class Anonymous:
    """The caller when nobody signed in (what the gateway calls app_readonly)."""

    role = "app_readonly"
    claims: dict[str, Any] = {"role": "app_readonly"}  # noqa: RUF012 - read only


def _service(request: Request) -> PaymentService:
    service = getattr(request.app.state, "payments", None)
    if not isinstance(service, PaymentService):
        raise unavailable("Payments are not configured on this gateway.", code="CC503")
    return service


def _request_id(request: Request) -> str:
    known = getattr(request.state, "request_id", None)
    if isinstance(known, str) and known:
        return known
    request_id = request_id_from(request.headers.get("x-request-id"))
    request.state.request_id = request_id
    return request_id


def _caller(request: Request, service: PaymentService) -> AuthContext:
    auth: AuthContext | None = getattr(request.state, "auth", None)
    if auth is None and service.authenticate is not None:
        auth = service.authenticate(request)
        request.state.auth = auth
    auth = auth or Anonymous()
    request.state.role = auth.role
    sub = auth.claims.get("sub")
    request.state.user_id = int(sub) if isinstance(sub, str) and sub.isdigit() else None
    return auth


def _spend(request: Request, action: str, auth: AuthContext) -> None:
    """The action's budgets: the client's, and the signed-in caller's account."""
    budgets: Budgets | None = getattr(request.app.state, "budgets", None)
    if budgets is None:  # the routes mounted without the gateway (the tests of this package)
        return
    sub = auth.claims.get("sub")
    budgets.spend_both(action, client_key(request.scope), user_account(sub) if sub else None)


async def checkout(request: Request) -> Response:
    request.state.route = "/orders/{order_id}/checkout"
    try:
        service = _service(request)
        auth = _caller(request, service)
        _spend(request, "checkout", auth)
        result = await service.start_checkout(
            request.path_params["order_id"], auth, request_id=_request_id(request)
        )
    except ApiError as exc:
        return exc.response()
    return JSONResponse(result.body(), status_code=201)


async def refund(request: Request) -> Response:
    request.state.route = "/orders/{order_id}/refund"
    try:
        service = _service(request)
        auth = _caller(request, service)
        _spend(request, "refund", auth)
        body = await read_json_object(request, JSON_BODY_LIMIT)
        amount = refund_amount(body)
        answer = await service.refund_order(
            request.path_params["order_id"],
            amount,
            auth,
            request_id=_request_id(request),
            idempotency_key=request.headers.get("idempotency-key"),
        )
    except ApiError as exc:
        return exc.response()
    response = JSONResponse(answer.body, status_code=answer.status)
    for name, value in answer.headers:
        response.headers.append(name, value)
    return response


async def stripe_webhook(request: Request) -> Response:
    request.state.route = "/webhooks/stripe"
    try:
        service = _service(request)
        raw = await read_body(request, WEBHOOK_BODY_LIMIT)
    except ApiError as exc:
        return exc.response()
    status, body = await service.handle_webhook(
        raw, request.headers.get("stripe-signature"), request_id=_request_id(request)
    )
    return JSONResponse(body, status_code=status)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}</style>
</head><body><h1>{title}</h1><p>{text}</p></body></html>
"""


def _order_label(request: Request) -> str:
    order_id = request.query_params.get("order_id", "")
    return f"order {html.escape(order_id)}" if order_id.isdigit() else "your order"


async def checkout_success(request: Request) -> Response:
    request.state.route = "/checkout/success"
    text = (
        f"Thank you: the payment of {_order_label(request)} was received. The order shows as paid as soon as "
        "Stripe confirms it (GET /orders/{id})."
    )
    return HTMLResponse(_PAGE.format(title="Payment received", text=text))


async def checkout_cancel(request: Request) -> Response:
    request.state.route = "/checkout/cancel"
    text = f"The checkout of {_order_label(request)} was left; nothing was charged. You can check out again."
    return HTMLResponse(_PAGE.format(title="Checkout not completed", text=text))


def payment_routes() -> list[BaseRoute]:
    """The routes of the Stripe paths, to put before the gateway's catch-all route."""
    return [
        Route("/orders/{order_id:int}/checkout", checkout, methods=["POST"]),
        Route("/orders/{order_id:int}/refund", refund, methods=["POST"]),
        Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
        Route("/checkout/success", checkout_success, methods=["GET", "HEAD"]),
        Route("/checkout/cancel", checkout_cancel, methods=["GET", "HEAD"]),
    ]
