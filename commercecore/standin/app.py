"""The stand-in's ASGI app: the Stripe API we use (form-encoded, Stripe's errors, Idempotency-Key), the
hosted checkout page, signed webhook delivery, and test controls under /_standin/ (JSON)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from commercecore.standin import forms, pages
from commercecore.standin.state import (
    API_VERSION,
    Endpoint,
    Failure,
    IdempotentResult,
    StandinState,
    StripeFailure,
    account_of,
    new_id,
)

log = logging.getLogger("commercecore.stripe_standin")

DELIVERY_RETRY_DELAYS = (0.2, 1.0)  # after the first attempt; Stripe itself retries for days


class Deliverer:
    """Posts events to the webhook URL, signed as Stripe signs them, one at a time in creation order."""

    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.queue: asyncio.Queue[str] | None = None
        self.client: httpx.AsyncClient | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.client = httpx.AsyncClient(timeout=30.0)
        self.tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.client is not None:
            await self.client.aclose()

    def enqueue(self, event_id: str) -> None:
        endpoint = self.state.endpoint(self.state.event_account(self.state.events[event_id]))
        if self.queue is not None and endpoint.enabled and endpoint.url:
            self.queue.put_nowait(event_id)

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            event_id = await self.queue.get()
            try:
                record = await self.deliver(event_id)
                for delay in DELIVERY_RETRY_DELAYS:
                    if record.get("ok"):
                        break
                    await asyncio.sleep(delay)  # backoff between attempts, as Stripe does
                    record = await self.deliver(event_id)
            except Exception:
                log.exception("delivery of %s failed", event_id)
            finally:
                self.queue.task_done()

    async def _sweep(self) -> None:
        """Sessions expire on their own at expires_at, as at Stripe."""
        while True:
            await asyncio.sleep(1.0)
            self.state.expire_due()

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109 - a JSON parameter, not a deadline
        """Waits until every queued event had its delivery attempts."""
        if self.queue is None:
            return True
        try:
            await asyncio.wait_for(self.queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def deliver(self, event_id: str, url: str | None = None) -> dict[str, Any]:
        """One signed POST of the event (a fresh signature and timestamp each time, as Stripe does)."""
        assert self.client is not None
        event = self.state.events[event_id]
        target = url or self.state.endpoint(self.state.event_account(event)).url
        record: dict[str, Any] = {"event": event_id, "at": time.time(), "url": target}
        if not target:
            record.update(ok=False, status=None, error="no webhook url")
            return record
        payload = json.dumps(event, indent=2)
        header = stripe.WebhookSignature.generate_signature_header(payload, self.state.webhook_secret)
        try:
            response = await self.client.post(
                target,
                content=payload.encode(),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": header,
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            )
            record.update(ok=response.is_success, status=response.status_code, body=response.text[:2000])
        except httpx.HTTPError as exc:
            record.update(ok=False, status=None, error=f"{type(exc).__name__}: {exc}")
        self.state.deliveries[event_id].append(record)
        return record


def _state(request: Request) -> StandinState:
    state: StandinState = request.app.state.standin
    return state


def _deliverer(request: Request) -> Deliverer:
    deliverer: Deliverer = request.app.state.deliverer
    return deliverer


def _api_key(authorization: str) -> str:
    """The secret key of `Authorization: Bearer sk_...` (the SDK) or Basic (curl -u sk_...:)."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def _valid_key(state: StandinState, key: str) -> bool:
    if state.api_key is not None:
        return key == state.api_key
    return key.startswith(("sk_test_", "rk_test_")) and len(key) > 8


@dataclass
class _Call:
    """One API request in the making: its entry in the request log and the headers of its answer."""

    entry: dict[str, Any]
    headers: dict[str, str]

    def answer(
        self, status: int, body: Mapping[str, Any], extra: Mapping[str, str] | None = None
    ) -> Response:
        self.entry["status"] = status
        return JSONResponse(dict(body), status_code=status, headers={**self.headers, **(extra or {})})

    def fail(self, failure: StripeFailure) -> Response:
        return self.answer(failure.status, failure.body())


def _start_call(state: StandinState, request: Request, api_key: str, key: str | None) -> _Call:
    request_id = new_id("req")
    entry: dict[str, Any] = {
        "id": request_id,
        "account": account_of(api_key),
        "method": request.method,
        "path": request.url.path,
        "idempotency_key": key,
        "status": None,
        "replayed": False,
        "at": time.time(),
    }
    state.requests.append(entry)
    headers = {
        "Request-Id": request_id,
        "Stripe-Version": request.headers.get("stripe-version") or API_VERSION,
    }
    if key:
        headers["Idempotency-Key"] = key
    return _Call(entry, headers)


def _scripted_failure(state: StandinState) -> StripeFailure | None:
    """The next failure fail_next asked for, counted down."""
    failure = state.failure
    if failure is None or failure.remaining <= 0:
        return None
    failure.remaining -= 1
    return StripeFailure(failure.status, failure.message, type=failure.type, code=failure.code)


def _invalid_key(api_key: str) -> StripeFailure:
    shown = (api_key[:8] + "*" * 4 + api_key[-4:]) if len(api_key) > 12 else "(none)"
    return StripeFailure(401, f"Invalid API Key provided: {shown}", code="api_key_invalid")


def _key_reused(key: str) -> StripeFailure:
    return StripeFailure(
        400,
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        f"Try using a key other than '{key}' if you meant to execute a different request.",
        type="idempotency_error",
    )


def _perform(
    state: StandinState,
    call: _Call,
    action: Callable[[StandinState, dict[str, Any]], Mapping[str, Any]],
    params: dict[str, Any],
) -> tuple[int, Mapping[str, Any], bool]:
    """Runs the call as the request's account; (status, body, whether an idempotent replay returns it)."""
    entry = call.entry
    state.current_request = {
        "id": entry["id"],
        "idempotency_key": entry["idempotency_key"],
        "account": entry["account"],
    }
    try:
        return 200, action(state, params), True
    except StripeFailure as exc:
        return exc.status, exc.body(), exc.saved
    finally:
        state.current_request = None


async def _api(
    request: Request, action: Callable[[StandinState, dict[str, Any]], Mapping[str, Any]]
) -> Response:
    """One API request the way Stripe serves it: failures scripted by fail_next first, the key, the
    parameters, Idempotency-Key (replay, or idempotency_error for other parameters), the call."""
    state = _state(request)
    method, path = request.method, request.url.path
    key = request.headers.get("idempotency-key") if method == "POST" else None
    api_key = _api_key(request.headers.get("authorization", ""))
    call = _start_call(state, request, api_key, key)
    scripted = _scripted_failure(state)
    if scripted is not None:
        return call.fail(scripted)
    if not _valid_key(state, api_key):
        return call.fail(_invalid_key(api_key))
    raw = (await request.body()).decode("utf-8", errors="replace") if method == "POST" else request.url.query
    try:
        params = forms.decode(raw)
    except forms.FormError as exc:
        return call.fail(StripeFailure(400, str(exc), code="parameter_unknown"))
    params.pop("expand", None)

    fingerprint = state.fingerprint(method, path, params)
    stored = state.idempotency.get((api_key, key)) if key else None
    if key and stored is not None:
        if stored.fingerprint != fingerprint:
            return call.fail(_key_reused(key))
        call.entry["replayed"] = True
        return call.answer(
            stored.status, stored.body, {"Idempotent-Replayed": "true", "Original-Request": stored.request_id}
        )
    status, body, saved = _perform(state, call, action, params)
    if key and saved:
        state.idempotency[(api_key, key)] = IdempotentResult(
            fingerprint, status, copy.deepcopy(dict(body)), call.entry["id"]
        )
    return call.answer(status, body)


def _line_items(state: StandinState, session_id: str) -> dict[str, Any]:
    state.session(session_id)
    data = state.session_lines.get(session_id, [])
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "url": f"/v1/checkout/sessions/{session_id}/line_items",
    }


async def create_session(request: Request) -> Response:
    return await _api(request, lambda s, p: s.create_session(p))


async def retrieve_session(request: Request) -> Response:
    return await _api(request, lambda s, p: s.session(request.path_params["id"]))


async def expire_session(request: Request) -> Response:
    return await _api(request, lambda s, p: s.expire_session(request.path_params["id"]))


async def session_line_items(request: Request) -> Response:
    return await _api(request, lambda s, p: _line_items(s, request.path_params["id"]))


async def create_refund(request: Request) -> Response:
    return await _api(request, lambda s, p: s.create_refund(p))


async def retrieve_refund(request: Request) -> Response:
    return await _api(request, lambda s, p: s.refund(request.path_params["id"]))


async def retrieve_intent(request: Request) -> Response:
    return await _api(request, lambda s, p: s.payment_intent(request.path_params["id"]))


async def retrieve_charge(request: Request) -> Response:
    return await _api(request, lambda s, p: s.charge(request.path_params["id"]))


async def unknown_api(request: Request) -> Response:
    def fail(state: StandinState, params: dict[str, Any]) -> Mapping[str, Any]:
        raise StripeFailure(
            404,
            f"Unrecognized request URL ({request.method}: {request.url.path}). The stand-in implements only "
            "what CommerceCore uses.",
            saved=False,
        )

    return await _api(request, fail)


# -- the hosted checkout page ----------------------------------------------------------------------


def _redirect_target(session: Mapping[str, Any], success: bool) -> str | None:
    url = session.get("success_url") if success else session.get("cancel_url")
    return str(url).replace("{CHECKOUT_SESSION_ID}", str(session["id"])) if url else None


async def pay_page(request: Request) -> Response:
    state = _state(request)
    try:
        session = state.session(request.path_params["id"])
    except StripeFailure:
        return HTMLResponse(pages.message_page("Checkout", "This checkout does not exist."), status_code=404)
    if session["status"] != "open":
        return HTMLResponse(pages.closed_page(session))
    return HTMLResponse(pages.checkout_page(session, state.session_lines.get(session["id"], [])))


async def pay_submit(request: Request) -> Response:
    state = _state(request)
    form = forms.decode((await request.body()).decode("utf-8", errors="replace"))
    action = form.get("action")
    delayed = form.get("method") == "sepa_debit"
    session_id = request.path_params["id"]
    try:
        if action == "pay":
            session = state.pay(session_id, delayed=delayed)
        elif action == "decline":
            session = state.decline(session_id, delayed=delayed)
        else:
            return HTMLResponse(pages.message_page("Checkout", "Choose Pay or Decline."), status_code=400)
    except StripeFailure as exc:
        found = state.sessions.get(session_id)
        if found is None:
            return HTMLResponse(pages.message_page("Checkout", exc.message), status_code=exc.status)
        return HTMLResponse(pages.closed_page(found), status_code=409)
    target = _redirect_target(session, success=action == "pay")
    if target is None:
        return HTMLResponse(pages.message_page("Checkout", f"Payment {action}: you can close this page."))
    return RedirectResponse(target, status_code=303)


# -- test controls ------------------------------------------------------------------------------------


async def _json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    value = json.loads(body)
    if not isinstance(value, dict):
        raise StripeFailure(400, "send a JSON object", saved=False)
    return value


def _control(
    action: Callable[[StandinState, Request, dict[str, Any]], Any],
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            result = action(_state(request), request, await _json(request))
            if asyncio.iscoroutine(result):
                result = await result
        except StripeFailure as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except ValueError as exc:
            return JSONResponse(StripeFailure(400, str(exc)).body(), status_code=400)
        return JSONResponse(result)

    return endpoint


def _flag(body: Mapping[str, Any], name: str) -> bool:
    return bool(body.get(name, False))


def _session_action(kind: str) -> Callable[[StandinState, Request, dict[str, Any]], Any]:
    def action(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
        session_id = request.path_params["id"]
        if kind == "complete":
            return state.pay(session_id, delayed=_flag(body, "async"))
        if kind == "decline":
            return state.decline(session_id, delayed=_flag(body, "async"))
        if kind == "async_succeed":
            return state.async_succeed(session_id)
        if kind == "async_fail":
            return state.async_fail(session_id)
        return state.expire_session(session_id)

    return action


def _sessions(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    """Sessions, filtered by ?client_reference_id= and ?account=."""
    reference = request.query_params.get("client_reference_id")
    account = request.query_params.get("account")
    found = [
        s
        for s in state.sessions.values()
        if (reference is None or s.get("client_reference_id") == reference)
        and (account is None or state.owners.get(s["id"]) == account)
    ]
    return {"data": found}


def _delivery(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    """{enabled?, url?, account?}: the account's own endpoint (created on first use), else the default."""
    account = body.get("account")
    if account:
        endpoint = state.endpoints.setdefault(
            str(account), Endpoint(state.webhook_url, state.delivery_enabled)
        )
        if "enabled" in body:
            endpoint.enabled = bool(body["enabled"])
        if "url" in body:
            endpoint.url = str(body["url"]) if body["url"] else None
        return {"account": account, "enabled": endpoint.enabled, "url": endpoint.url}
    if "enabled" in body:
        state.delivery_enabled = bool(body["enabled"])
    if "url" in body:
        state.webhook_url = str(body["url"]) if body["url"] else None
    return {"enabled": state.delivery_enabled, "url": state.webhook_url}


def _fail_next(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    count = int(body.get("count", 1))
    state.failure = Failure(
        remaining=count,
        status=int(body.get("status", 500)),
        type=str(body.get("type", "api_error")),
        code=body.get("code"),
        message=str(body.get("message", "An unexpected error occurred (stand-in: fail_next).")),
    )
    return {"count": count, "status": state.failure.status}


def _related(event: Mapping[str, Any]) -> set[str]:
    obj = event["data"]["object"]
    ids = {obj.get(k) for k in ("id", "payment_intent", "charge", "latest_charge")}
    return {i for i in ids if isinstance(i, str)}


def _events(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    """Every event, oldest first, with its deliveries; filtered by ?related= (object ids), ?type=,
    ?account=."""
    related = set(request.query_params.getlist("related"))
    kind = request.query_params.get("type")
    account = request.query_params.get("account")
    found = [
        {**event, "deliveries": state.deliveries.get(event["id"], [])}
        for event in state.events.values()
        if (not related or related & _related(event))
        and (kind is None or event["type"] == kind)
        and (account is None or state.event_account(event) == account)
    ]
    return {"data": found}


async def _deliver_many(request: Request, ids: list[str], parallel: bool) -> dict[str, Any]:
    state, deliverer = _state(request), _deliverer(request)
    for event_id in ids:
        if event_id not in state.events:
            raise StripeFailure(404, f"No such event: '{event_id}'", code="resource_missing")
    if parallel:
        results = await asyncio.gather(*(deliverer.deliver(event_id) for event_id in ids))
    else:
        results = [await deliverer.deliver(event_id) for event_id in ids]
    return {"results": list(results)}


def _redeliver(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    times = int(body.get("times", 1))
    return _deliver_many(request, [request.path_params["id"]] * times, _flag(body, "parallel"))


def _deliver(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    ids = body.get("events")
    if not isinstance(ids, list):
        raise ValueError("events must be a list of event ids")
    return _deliver_many(request, [str(i) for i in ids], _flag(body, "parallel"))


async def _flush_async(request: Request, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    drained = await _deliverer(request).flush(timeout)
    if not drained:
        raise StripeFailure(504, "deliveries still pending", saved=False)
    return {"drained": True}


def _flush(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    return _flush_async(request, float(body.get("timeout", 10.0)))


def _requests(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    """The API request log, filtered by ?path= and ?account= (account_of(api key))."""
    path = request.query_params.get("path")
    account = request.query_params.get("account")
    return {
        "data": [
            r
            for r in state.requests
            if (path is None or r["path"] == path) and (account is None or r["account"] == account)
        ]
    }


def _refund_mode(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    mode = body.get("mode", "succeed")
    if mode not in ("succeed", "pending"):
        raise ValueError("mode is succeed or pending")
    state.refund_mode = str(mode)
    return {"mode": state.refund_mode}


def _settle(succeed: bool) -> Callable[[StandinState, Request, dict[str, Any]], Any]:
    def action(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
        return state.settle_refund(request.path_params["id"], succeed=succeed)

    return action


def _expire_due(state: StandinState, request: Request, body: dict[str, Any]) -> Any:
    return {"expired": state.expire_due()}


def create_app(state: StandinState) -> Starlette:
    """The stand-in app around a state (webhook url and secret, API key policy, base url for pay pages)."""
    deliverer = Deliverer(state)
    state.on_event = deliverer.enqueue

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await deliverer.start()
        try:
            yield
        finally:
            await deliverer.stop()

    c = _control
    routes = [
        Route("/v1/checkout/sessions", create_session, methods=["POST"]),
        Route("/v1/checkout/sessions/{id}", retrieve_session, methods=["GET"]),
        Route("/v1/checkout/sessions/{id}/expire", expire_session, methods=["POST"]),
        Route("/v1/checkout/sessions/{id}/line_items", session_line_items, methods=["GET"]),
        Route("/v1/refunds", create_refund, methods=["POST"]),
        Route("/v1/refunds/{id}", retrieve_refund, methods=["GET"]),
        Route("/v1/payment_intents/{id}", retrieve_intent, methods=["GET"]),
        Route("/v1/charges/{id}", retrieve_charge, methods=["GET"]),
        Route("/v1/{path:path}", unknown_api, methods=["GET", "POST", "DELETE"]),
        Route("/pay/{id}", pay_page, methods=["GET"]),
        Route("/pay/{id}", pay_submit, methods=["POST"]),
        Route("/_standin/sessions", c(_sessions), methods=["GET"]),
        Route("/_standin/sessions/{id}/complete", c(_session_action("complete")), methods=["POST"]),
        Route("/_standin/sessions/{id}/decline", c(_session_action("decline")), methods=["POST"]),
        Route("/_standin/sessions/{id}/async_succeed", c(_session_action("async_succeed")), methods=["POST"]),
        Route("/_standin/sessions/{id}/async_fail", c(_session_action("async_fail")), methods=["POST"]),
        Route("/_standin/sessions/{id}/expire", c(_session_action("expire")), methods=["POST"]),
        Route("/_standin/expire_due", c(_expire_due), methods=["POST"]),
        Route("/_standin/delivery", c(_delivery), methods=["GET", "POST"]),
        Route("/_standin/fail_next", c(_fail_next), methods=["POST"]),
        Route("/_standin/events", c(_events), methods=["GET"]),
        Route("/_standin/events/{id}/redeliver", c(_redeliver), methods=["POST"]),
        Route("/_standin/deliver", c(_deliver), methods=["POST"]),
        Route("/_standin/flush", c(_flush), methods=["POST"]),
        Route("/_standin/requests", c(_requests), methods=["GET"]),
        Route("/_standin/refund_mode", c(_refund_mode), methods=["POST"]),
        Route("/_standin/refunds/{id}/succeed", c(_settle(True)), methods=["POST"]),
        Route("/_standin/refunds/{id}/fail", c(_settle(False)), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.standin = state
    app.state.deliverer = deliverer
    return app
