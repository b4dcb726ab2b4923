"""PaymentService: the Stripe paths' dependencies (database pool, Stripe client, settings) in one object, the
entry points the HTTP routes, the CLI and the jobs runner call."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import stripe
from starlette.requests import Request

from gateway.db import SessionInactive
from gateway.errors import ApiError, unauthorized
from gateway.guard import check_connection
from gateway.payments import checkout, reconcile, refunds, webhook
from gateway.payments.client import client_from_settings
from gateway.payments.config import PaymentSettings
from gateway.payments.store import PaymentStore


class AuthContext(Protocol):
    """Who calls: the request role and the JWT claims (`sub`, `role`, ...). The gateway's `db.Identity`
    fits; when the object also has `jti` and `user_id` (a signed-in session), the session is checked in
    the same transaction, as for every other request."""

    @property
    def role(self) -> str: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


def session_of(auth: AuthContext) -> tuple[str, int, str] | None:
    """(jti, user id, role) to check in the transaction, for a caller signed in with a session."""
    jti = getattr(auth, "jti", None)
    user_id = getattr(auth, "user_id", None)
    if isinstance(jti, str) and jti and isinstance(user_id, int):
        return jti, user_id, auth.role
    return None


def session_ended() -> ApiError:
    """401 for a session that is no longer active, when no gateway says how to clear its cookie."""
    return unauthorized("The session has ended (signed out, password changed or expired).", "session_revoked")


class PaymentService:
    """Owns a PaymentStore (opened by `open()`, closed by `close()`) and a StripeClient.

    `authenticate` is how the routes find the caller when the gateway did not put one on
    `request.state.auth`: a callable Request -> AuthContext that may raise gateway.errors.ApiError.
    `session_ended` makes the 401 of a caller whose session ended meanwhile (the gateway's clears its
    session cookie).
    """

    def __init__(
        self,
        store: PaymentStore,
        client: stripe.StripeClient,
        settings: PaymentSettings,
        *,
        authenticate: Callable[[Request], AuthContext] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.authenticate = authenticate
        self.session_ended: Callable[[], ApiError] = session_ended

    @classmethod
    def from_env(
        cls,
        conninfo: str,
        environ: Mapping[str, str] | None = None,
        *,
        authenticate: Callable[[Request], AuthContext] | None = None,
        max_connections: int = 8,
        pool_timeout: float = 5.0,
        shop_settings: Sequence[tuple[str, str]] = (),
    ) -> PaymentService:
        """Settings from the environment (PaymentSettings.from_env), a pool on `conninfo` (the gateway's
        authenticator URL, whose connections are refused when it is a superuser or has BYPASSRLS, as the
        gateway's own; its transactions set `shop_settings`) and a client for STRIPE_API_BASE or Stripe."""
        settings = PaymentSettings.from_env(environ)
        store = PaymentStore(
            conninfo,
            max_size=max_connections,
            timeout=pool_timeout,
            configure=check_connection,
            shop_settings=shop_settings,
        )
        return cls(store, client_from_settings(settings), settings, authenticate=authenticate)

    def open(self) -> None:
        self.store.open()

    def close(self) -> None:
        self.store.close()

    def start_checkout(
        self, order_id: int, auth: AuthContext, *, request_id: str = ""
    ) -> checkout.CheckoutResult:
        try:
            return checkout.start_checkout(
                self.store,
                self.client,
                self.settings,
                order_id,
                claims=auth.claims,
                session=session_of(auth),
                request_id=request_id,
            )
        except SessionInactive:
            raise self.session_ended() from None

    def handle_webhook(
        self, raw_body: bytes, signature: str | None, *, request_id: str = ""
    ) -> tuple[int, dict[str, Any]]:
        return webhook.handle_webhook(
            self.store, self.client, self.settings, raw_body, signature, request_id=request_id
        )

    def refund_order(
        self, order_id: int, amount: int | None, auth: AuthContext, *, request_id: str = ""
    ) -> tuple[int, dict[str, Any]]:
        try:
            return refunds.refund_order(
                self.store,
                self.client,
                order_id,
                amount,
                role=auth.role,
                claims=auth.claims,
                session=session_of(auth),
                request_id=request_id,
            )
        except SessionInactive:
            raise self.session_ended() from None

    def reconcile(self, older_than: datetime.timedelta) -> reconcile.ReconcileReport:
        return reconcile.reconcile_with(self.store, self.client, older_than)
