"""PaymentService: the Stripe paths' dependencies (Stripe client, settings, and the store on the gateway's
pool) in one object, the entry points the HTTP routes and the tests call."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

from starlette.requests import Request

from gateway import db
from gateway.errors import ApiError, unauthorized
from gateway.payments import checkout, reconcile, refunds, webhook
from gateway.payments.client import StripeClient, client_from_settings
from gateway.payments.config import PaymentSettings
from gateway.payments.store import PaymentStore, own_store


class AuthContext(Protocol):
    """Who calls: the request role and the JWT claims (`sub`, `role`, ...). The gateway's `db.Identity`
    fits; when the object also has `jti` and `user_id` (a signed-in session), the session is checked in
    the same transaction, as for every other request."""

    @property
    def role(self) -> str: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


def session_of(auth: AuthContext) -> db.Identity | None:
    """The caller's session to check in the transaction, for a caller signed in with one."""
    if isinstance(auth, db.Identity):
        return auth if auth.authenticated else None
    jti = getattr(auth, "jti", None)
    user_id = getattr(auth, "user_id", None)
    if isinstance(jti, str) and jti and isinstance(user_id, int):
        return db.Identity(role=auth.role, claims=auth.claims, jti=jti, user_id=user_id)
    return None


def session_ended() -> ApiError:
    """401 for a session that is no longer active, when no gateway says how to clear its cookie."""
    return unauthorized("The session has ended (signed out, password changed or expired).", "session_revoked")


class PaymentService:
    """The Stripe client and settings, and the store its transactions run on: the gateway binds it to its
    own pool when it starts (`bind`); `standalone` makes one with a pool of its own.

    `authenticate` is how the routes find the caller when the gateway did not put one on
    `request.state.auth`: a callable Request -> AuthContext that may raise gateway.errors.ApiError.
    `session_ended` makes the 401 of a caller whose session ended meanwhile (the gateway's clears its
    session cookie).
    """

    def __init__(
        self,
        settings: PaymentSettings,
        *,
        client: StripeClient | None = None,
        authenticate: Callable[[Request], AuthContext] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or client_from_settings(settings)
        self.authenticate = authenticate
        self.session_ended: Callable[[], ApiError] = session_ended
        self._store: PaymentStore | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        authenticate: Callable[[Request], AuthContext] | None = None,
    ) -> PaymentService:
        """Settings from the environment (PaymentSettings.from_env) and a client for STRIPE_API_BASE or
        Stripe; the store comes with the gateway's pool."""
        return cls(PaymentSettings.from_env(environ), authenticate=authenticate)

    @property
    def store(self) -> PaymentStore:
        if self._store is None:
            raise RuntimeError("the payment service is not bound to a database pool yet")
        return self._store

    def bind(self, store: PaymentStore) -> None:
        self._store = store

    async def aclose(self) -> None:
        """Closes the Stripe client's connections (on the event loop that used them)."""
        await self.client.aclose()

    async def start_checkout(
        self, order_id: int, auth: AuthContext, *, request_id: str = ""
    ) -> checkout.CheckoutResult:
        attempt = checkout.Checkout(
            self.store, self.client, order_id, auth.claims, session_of(auth), request_id
        )
        try:
            return await checkout.start_checkout(attempt, self.settings)
        except db.SessionInactive:
            raise self.session_ended() from None

    async def handle_webhook(
        self, raw_body: bytes, signature: str | None, *, request_id: str = ""
    ) -> tuple[int, dict[str, Any]]:
        return await webhook.handle_webhook(
            self.store, self.client, self.settings, raw_body, signature, request_id=request_id
        )

    async def refund_order(
        self,
        order_id: int,
        amount: int | None,
        auth: AuthContext,
        *,
        request_id: str = "",
        idempotency_key: str | None = None,
    ) -> refunds.RefundAnswer:
        try:
            return await refunds.refund_order(
                self.store,
                self.client,
                order_id,
                amount,
                role=auth.role,
                claims=auth.claims,
                session=session_of(auth),
                request_id=request_id,
                idempotency_key=idempotency_key,
            )
        except db.SessionInactive:
            raise self.session_ended() from None

    async def reconcile(self, older_than: datetime.timedelta) -> reconcile.ReconcileReport:
        return await reconcile.reconcile_with(self.store, self.client, older_than)


@contextlib.asynccontextmanager
async def standalone(
    conninfo: str,
    settings: PaymentSettings,
    *,
    max_size: int = 4,
    timeout: float = 10.0,  # noqa: ASYNC109 - the pool's wait for a connection, not a deadline for the call
    shop_settings: Sequence[tuple[str, str]] = (),
) -> AsyncIterator[PaymentService]:
    """A service with a pool of its own (`own_store`), outside a gateway; its client closed on exit."""
    service = PaymentService(settings)
    try:
        async with own_store(
            conninfo, max_size=max_size, timeout=timeout, shop_settings=shop_settings
        ) as store:
            service.bind(store)
            yield service
    finally:
        await service.aclose()
