"""The Starlette application: `create_app(settings)`; the lifespan owns the pool and the schema cache."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway import anonymous, auth, background, bounds, db, guard, logs, openapi, schema_cache
from gateway.errors import ApiError, error_response, internal, unavailable
from gateway.handler import handle
from gateway.http import client_address, header, request_id_from, url_path
from gateway.metrics import PUBLISH_INTERVAL, Metrics, pool_stats
from gateway.payments.routes import FRONTED_ROUTES, payment_routes
from gateway.payments.store import PaymentStore
from gateway.replicas import Replicas
from gateway.routes import RouteTable
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.payments.service import PaymentService

log = logging.getLogger("commercecore.gateway")

# Where the schema listener connects (default: the gateway's own URL). LISTEN needs a session of its own,
# which a transaction-pooling proxy (PgBouncer, pool_mode = transaction) cannot give: behind one, point this
# at PostgreSQL itself.
LISTEN_URL_ENV = "COMMERCECORE_LISTEN_URL"
# how often the schema cache is reloaded when NOTIFY does not reach the listener (see watch_notifications)
SCHEMA_POLL_INTERVAL = 30.0


@dataclass(frozen=True)
class SchemaState:
    """One loaded schema cache with what is derived from it (swapped whole on reload)."""

    cache: schema_cache.SchemaCache
    routes: RouteTable
    openapi: bytes
    loaded_at: float


class Gateway:
    """What the handlers share: settings, auth, metrics and the current schema cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = auth.AuthService.create(settings)
        self.pool: AsyncConnectionPool[Any] | None = None
        self.metrics = Metrics(pool_stats(self), token=settings.metrics_token, purged=self.purge_totals)
        self.schema_state: SchemaState | None = None
        self.anonymous = anonymous.AnonymousShare(settings.anonymous, settings.pool_max)
        # streaming replicas for reads (DATABASE_REPLICA_URLS); the schema cache is always the primary's
        self.replicas = Replicas(settings, self.metrics.registry) if settings.replicas.urls else None
        db.configure_caches(settings.limits.statement_cache_bytes, settings.limits.statement_cache_max_entry)
        # the gateway's own routes that front an api function, documented as its declared route would be
        self.fronted: tuple[tuple[str, str, str], ...] = ()
        self._reload_lock = asyncio.Lock()
        self._last_attempt = 0.0

    def authenticate(self, request: Request) -> Any:
        return self.auth.authenticate(request)

    async def role_settings(self) -> Mapping[str, Mapping[str, str]]:
        """The roles' per-transaction settings, as the schema cache has them (for the Stripe paths)."""
        return (await self.current()).cache.role_settings

    async def purge_totals(self) -> dict[str, int] | None:
        """The rows `commercecore jobs run` has purged, per table, for /metrics; None without the database
        (the rest of /metrics is served all the same)."""
        pool = self.pool
        if pool is None:
            return None
        try:
            async with pool.connection(timeout=self.settings.pool_timeout) as conn:
                cursor = await conn.execute("select table_name, purged_rows from auth.purge_totals()")
                rows = await cursor.fetchall()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("metrics: purge totals not read: %s", str(exc).strip() or type(exc).__name__)
            return None
        return {str(table): int(count) for table, count in rows}

    async def reload(self) -> SchemaState:
        """Reads the schema cache and swaps it in; requests in flight keep the one they started with."""
        async with self._reload_lock:
            self._last_attempt = time.monotonic()
            pool = self.pool
            if pool is None:
                raise RuntimeError("the connection pool is not open")
            try:
                async with pool.connection(timeout=self.settings.pool_timeout) as conn:
                    loaded = await schema_cache.load(conn)
            except Exception:
                self.metrics.schema_reloads.labels("failed").inc()
                raise
            # anonymous requests: the shorter statement timeout, one core (gateway.anonymous)
            loaded = dataclasses.replace(
                loaded,
                role_settings=anonymous.role_settings(loaded.role_settings, self.settings.anonymous),
            )
            routes = RouteTable(loaded, self.settings.limits)
            for warning in (*loaded.warnings, *routes.warnings):
                log.warning("schema cache: %s", warning)
            cookies = self.auth.cookies
            document = json.dumps(
                openapi.build(
                    loaded, session_cookie=cookies.session, csrf_cookie=cookies.csrf, fronted=self.fronted
                ),
                separators=(",", ":"),
            ).encode()
            state = SchemaState(loaded, routes, document, time.time())
            self.schema_state = state
            self.metrics.schema_reloads.labels("ok").inc()
            log.info(
                "schema cache loaded: %d views, %d functions, %d declared routes",
                len(loaded.views),
                sum(len(f) for f in loaded.functions.values()),
                len(routes.routes),
            )
            return state

    async def schema(self) -> tuple[schema_cache.SchemaCache, RouteTable]:
        state = await self.current()
        return state.cache, state.routes

    async def current(self) -> SchemaState:
        state = self.schema_state
        if state is not None:
            return state
        # not loaded yet (the database was down at startup): one attempt per second at most
        if time.monotonic() - self._last_attempt >= 1.0:
            try:
                return await self.reload()
            except Exception as exc:
                log.warning("schema cache not loaded: %s", str(exc).strip() or type(exc).__name__)
        raise unavailable("The schema cache is not loaded yet: the database is unreachable.", retry_after=2)


# -- the pool and the schema listener ---------------------------------------------------------------------


async def publish_pool_metrics(gateway: Gateway) -> None:
    """With several workers, each publishes its pool's statistics now and then (see gateway.metrics)."""
    if not gateway.metrics.multiprocess:
        return
    while True:
        gateway.metrics.publish_pool()
        await asyncio.sleep(PUBLISH_INTERVAL)


async def notifications_arrive(listen_url: str, pool: AsyncConnectionPool[Any], wait: float) -> bool:
    """Whether a NOTIFY sent on a pooled connection reaches a LISTEN on `listen_url` (on a channel of its
    own: no gateway reloads for it). Through a transaction-pooling PgBouncer it never does: the LISTEN stays
    behind on a server connection that the proxy hands to other clients between transactions."""
    channel = f"commercecore_probe_{uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(
        listen_url, autocommit=True, application_name="commercecore-gateway-probe"
    ) as conn:
        await conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
        async with pool.connection(timeout=wait) as sender:
            await sender.execute("select pg_catalog.pg_notify(%s, 'probe')", [channel])
        # closed before the connection is: a suspended notifies() holds the connection's lock
        async with contextlib.aclosing(conn.notifies(timeout=wait, stop_after=1)) as notifies:
            async for _notify in notifies:
                return True
    return False


async def watch_notifications(
    gateway: Gateway, listener: schema_cache.SchemaListener, listen_url: str, wait: float
) -> None:
    """Checks once (when the listener first listens) that NOTIFY reaches it. When it does not, says what to
    set and reloads the schema cache every SCHEMA_POLL_INTERVAL seconds instead, so a deployment still
    reaches this gateway, late rather than never."""
    await listener.listening.wait()
    pool = gateway.pool
    if pool is None:
        return
    try:
        if await notifications_arrive(listen_url, pool, wait):
            return
    except Exception as exc:  # the database went away meanwhile: the listener reconnects on its own
        log.warning("schema listener: NOTIFY check failed: %s", str(exc).strip() or type(exc).__name__)
        return
    log.warning(
        "schema listener: NOTIFY does not reach it (a transaction-pooling proxy such as PgBouncer between "
        "the gateway and PostgreSQL drops it); set %s to a URL of PostgreSQL itself. Until then the schema "
        "cache is reloaded every %g s",
        LISTEN_URL_ENV,
        SCHEMA_POLL_INTERVAL,
    )
    while True:
        await asyncio.sleep(SCHEMA_POLL_INTERVAL)
        try:
            await gateway.reload()
        except Exception as exc:
            log.warning("schema cache reload failed: %s", str(exc).strip() or type(exc).__name__)


# -- endpoints the gateway serves itself ---------------------------------------------------------------


async def health(request: Request) -> Response:
    """200 when the database answers, 503 when it does not. The answer is public: it says ok or
    unavailable, never why (the database's error names hosts, roles and files); the log has the reason."""
    request.state.route = "/health"
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    try:
        async with pool.connection(timeout=request.app.state.settings.pool_timeout) as conn:
            await conn.execute("select 1")
    except (psycopg.Error, TimeoutError) as exc:
        log.warning(
            "health: database unavailable: %s",
            str(exc).strip() or type(exc).__name__,
            extra={"request_id": getattr(request.state, "request_id", None)},
        )
        return JSONResponse({"status": "unavailable", "database": "unavailable"}, status_code=503)
    gateway: Gateway = request.app.state.gateway
    loaded = gateway.schema_state is not None
    return JSONResponse(
        {"status": "ok", "database": "ok", "schema_cache": "loaded" if loaded else "not loaded"}
    )


async def openapi_json(request: Request) -> Response:
    request.state.route = "/openapi.json"
    gateway: Gateway = request.app.state.gateway
    state = await gateway.current()
    return Response(state.openapi, media_type="application/openapi+json")


def _auth_endpoint(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        request.state.route = request.url.path
        if request.method != "POST":
            raise ApiError(
                405,
                "PGRST117",
                f"{request.method} is not allowed here; allowed: POST.",
                details={"code": "method_not_allowed", "allowed": ["POST"]},
                headers={"Allow": "POST"},
            )
        gateway: Gateway = request.app.state.gateway
        handler = getattr(gateway.auth, name)
        response: Response = await handler(request)
        return response

    endpoint.__name__ = name
    return endpoint


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response(head=request.method == "HEAD")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    body = {
        "code": f"HTTP{exc.status_code}",
        "message": str(exc.detail),
        "details": {"code": "method_not_allowed" if exc.status_code == 405 else "http_error"},
        "hint": None,
    }
    return error_response(exc.status_code, body, headers, head=request.method == "HEAD")


# -- request id, access log, metrics, and the last line of defence -----------------------------------


class RequestMiddleware:
    """X-Request-Id on every response, one JSON access-log line and the metrics of every request, and a
    JSON 500 (request id only, the traceback to the log) for anything unexpected."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # read straight from the scope: no Request, Headers or URL objects on the path of every request
        started = time.perf_counter()
        request_id = request_id_from(header(scope, b"x-request-id"))
        request_id_header = (b"x-request-id", request_id.encode())
        state = scope.setdefault("state", {})
        state.update(
            {"request_id": request_id, "route": "unmatched", "role": None, "user_id": None, "sqlstate": None}
        )
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [item for item in message.get("headers", []) if item[0].lower() != b"x-request-id"]
                headers.append(request_id_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            refused = bounds.refusal(scope, self.gateway.settings.limits)
            if refused is None:
                await self.app(scope, receive, send_wrapper)
            else:
                state["route"] = "refused"
                await refused.response(head=scope["method"] == "HEAD")(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not response_started:
                response = internal(request_id).response(head=scope["method"] == "HEAD")
                await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            path = url_path(scope)[: self.gateway.settings.limits.max_query_bytes]
            route = state.get("route") or "unmatched"
            if route == "unmatched" and path.startswith("/docs/") and status < 400:
                route = "/docs/{asset}"  # the static Swagger UI files
            self.gateway.metrics.observe(method, route, status, elapsed, state.get("sqlstate"))
            if self.gateway.settings.access_log:
                logs.access(
                    request_id=request_id,
                    method=method,
                    path=path,
                    route=route,
                    status=status,
                    duration_ms=elapsed * 1000,
                    role=state.get("role"),
                    user_id=state.get("user_id"),
                    client=client_address(scope),
                    sqlstate=state.get("sqlstate"),
                )


class CatchAll(Route):
    """The catch-all route (`/{path:path}` -> handler.handle), tried first but matching only paths whose first
    segment no route of the gateway's own has: the API paths skip trying those one by one. The paths it
    leaves reach the gateway's routes and, failing them, the ordinary catch-all at the end."""

    def __init__(self, endpoint: Any, methods: list[str], *, reserved: frozenset[str] | None) -> None:
        super().__init__("/{path:path}", endpoint, methods=methods)
        self.reserved = reserved

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # (behind a root_path the ordinary routing decides)
        if self.reserved is not None and scope["type"] == "http" and not scope.get("root_path"):
            first = scope["path"][1:].partition("/")[0]
            if first not in self.reserved:
                return super().matches(scope)
        return Match.NONE, {}


def first_segments(routes: list[BaseRoute]) -> frozenset[str] | None:
    """The first path segments of routes (None when one starts with a parameter: then any path may be
    theirs)."""
    segments: set[str] = set()
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None
        first = path[1:].partition("/")[0]
        if not first or "{" in first:
            return None
        segments.add(first)
    return frozenset(segments)


def _payment_service(
    settings: Settings, payments: PaymentService | bool | None, from_env: bool
) -> PaymentService | None:
    """The Stripe paths' service: given, built from the environment, or none.

    By default they are on when the settings come from the environment (`commercecore serve`: then a
    missing STRIPE_SECRET_KEY refuses to start), in demo mode (the local stand-in), or when
    STRIPE_SECRET_KEY is set; tests that build settings by hand get none unless they pass one.
    """
    if payments is None:
        payments = from_env or settings.demo or bool(os.environ.get("STRIPE_SECRET_KEY"))
    if payments is False:
        return None
    from gateway.payments.service import PaymentService

    if payments is True:
        environ = {**os.environ, **({"COMMERCECORE_DEMO": "1"} if settings.demo else {})}
        return PaymentService.from_env(environ)
    assert isinstance(payments, PaymentService)
    return payments


# -- the lifespan: pool, schema listener, background tasks, the Stripe paths' service ---------------------


async def open_pool(settings: Settings) -> AsyncConnectionPool[Any]:
    """The gateway's pool (every path's: requests, auth, the Stripe paths), opened without waiting: the
    gateway starts even when the database is down, and /health says so until it is back."""
    # a superuser or BYPASSRLS login never serves: refused now when the database answers, and each new
    # pooled connection is checked (configure) in case it did not or the login changes later
    await guard.check_url_async(settings.database_url, settings.pool_timeout)
    pool = db.connection_pool(
        settings.database_url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        application_name="commercecore-gateway",
        configure=guard.check_async_connection,
    )
    await pool.open(wait=False)
    return pool


async def start_schema_listener(gateway: Gateway, listen_url: str) -> schema_cache.SchemaListener:
    """LISTEN first, then load: a deployment between the two cannot go unnoticed. A database that is
    down leaves the cache unloaded (Gateway.current retries); the listener reconnects on its own."""
    listener = schema_cache.SchemaListener(listen_url, gateway.reload)
    listener.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(listener.listening.wait(), timeout=gateway.settings.pool_timeout)
    try:
        await gateway.reload()
    except Exception as exc:
        log.warning("schema cache not loaded at startup: %s", str(exc).strip() or type(exc).__name__)
    return listener


def open_payments(service: PaymentService, gateway: Gateway, pool: AsyncConnectionPool[Any]) -> None:
    """The Stripe paths' service, on the gateway's sign-in and session revocation, and on the requests'
    pool with their role settings and the shop's settings."""
    if service.authenticate is None:
        service.authenticate = gateway.authenticate
    service.session_ended = gateway.auth.session_ended
    service.bind(
        PaymentStore(
            pool,
            timeout=gateway.settings.pool_timeout,
            shop_settings=gateway.settings.order_settings,
            role_settings=gateway.role_settings,
        )
    )


def freeze_startup_objects() -> None:
    """Everything built so far (modules, schema cache, pool) lives as long as the process: out of the
    collector's sight, a full collection walks only what requests create (see create_served_app)."""
    gc.collect()
    gc.freeze()


class Lifespan:
    """The app's life: at startup the pool, the schema listener and the first load of the schema cache,
    the background tasks (the NOTIFY check, the pool metrics) and the Stripe paths' service; at shutdown
    each of them stopped, in reverse order."""

    def __init__(self, gateway: Gateway, service: PaymentService | None, listen_url: str) -> None:
        self.gateway = gateway
        self.service = service
        self.listen_url = listen_url

    @contextlib.asynccontextmanager
    async def __call__(self, app: Starlette) -> AsyncIterator[None]:
        gateway = self.gateway
        if gateway.replicas is not None:
            await gateway.replicas.check_logins()
        pool = await open_pool(gateway.settings)
        app.state.pool = pool
        app.state.settings = gateway.settings
        gateway.pool = pool
        listener = await start_schema_listener(gateway, self.listen_url)
        app.state.listener = listener
        if gateway.replicas is not None:
            await gateway.replicas.open()
        tasks = self.start_tasks(listener)
        if self.service is not None:
            open_payments(self.service, gateway, pool)
            app.state.payments = self.service
        if getattr(app.state, "freeze_gc", False):
            freeze_startup_objects()
        try:
            yield
        finally:
            await self.shut_down(pool, listener, tasks)

    def start_tasks(self, listener: schema_cache.SchemaListener) -> list[asyncio.Task[None]]:
        watcher = asyncio.create_task(
            watch_notifications(self.gateway, listener, self.listen_url, self.gateway.settings.pool_timeout),
            name="schema-notify-check",
        )
        publisher = asyncio.create_task(publish_pool_metrics(self.gateway), name="pool-metrics")
        tasks = [watcher, publisher]
        if self.gateway.replicas is not None:
            tasks.append(asyncio.create_task(self.gateway.replicas.watch(), name="replica-monitor"))
        return tasks

    async def shut_down(
        self,
        pool: AsyncConnectionPool[Any],
        listener: schema_cache.SchemaListener,
        tasks: list[asyncio.Task[None]],
    ) -> None:
        for task in tasks:
            await background.stop(task)
        self.gateway.metrics.process_exited()
        await listener.stop()
        if self.service is not None:
            await self.service.aclose()
        if self.gateway.replicas is not None:
            await self.gateway.replicas.close()
        await pool.close()


# -- routes and middleware -----------------------------------------------------------------------------

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# path -> the AuthService method that answers it (POST only; other methods get a 405 in the API's shape)
AUTH_ENDPOINTS = (
    ("/auth/signup", "signup"),
    ("/auth/login", "login"),
    ("/auth/token", "token"),
    ("/auth/logout", "logout"),
    ("/me/password", "change_password"),
)


def own_routes(gateway: Gateway, *, payments: bool) -> list[BaseRoute]:
    """The routes the gateway answers itself: health, metrics, OpenAPI and /docs, auth, and the Stripe
    paths (checkout, refund, webhook, return pages) when payments are on."""
    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/metrics", gateway.metrics.endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET", "HEAD"]),
        Route("/docs", openapi.docs_page, methods=["GET", "HEAD"]),
        Route("/docs/init.js", openapi.docs_init, methods=["GET", "HEAD"]),
        Mount("/docs", StaticFiles(directory=openapi.swagger_ui_dir()), name="docs"),
        *(Route(path, _auth_endpoint(name), methods=ALL_METHODS) for path, name in AUTH_ENDPOINTS),
        *(payment_routes() if payments else []),
    ]


def all_routes(own: list[BaseRoute]) -> list[BaseRoute]:
    """The gateway's own routes between two catch-alls to the API's handler: the first takes the paths
    none of the own routes can match, the last what the own routes leave."""
    return [
        CatchAll(handle, ALL_METHODS, reserved=first_segments(own)),
        *own,
        Route("/{path:path}", handle, methods=ALL_METHODS),
    ]


def add_middleware(app: Starlette, gateway: Gateway) -> None:
    """Request ids, the access log and metrics around every request; the proxy headers outside them."""
    app.add_middleware(RequestMiddleware, gateway=gateway)
    if gateway.settings.trusted_proxies:
        # outermost: the access log, the metrics' loopback check and the throttles all see the client the
        # proxy named. Only a peer in COMMERCECORE_TRUSTED_PROXIES is believed, whatever server runs the app
        # (`commercecore serve` leaves uvicorn's own proxy handling off)
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(gateway.settings.trusted_proxies))


def create_app(
    settings: Settings | None = None,
    *,
    payments: PaymentService | bool | None = None,
    listen_url: str | None = None,
) -> Starlette:
    """Build the gateway; without settings they are read from the environment.

    `payments`: a PaymentService for the Stripe routes, True/False to build one from the environment or
    go without, None for the default (see `_payment_service`).
    `listen_url`: where the schema listener connects; default COMMERCECORE_LISTEN_URL, else the
    gateway's own database URL.
    """
    from_env = settings is None
    settings = settings or Settings.from_env()
    listen_url = listen_url or os.environ.get(LISTEN_URL_ENV) or settings.database_url
    logs.configure()
    service = _payment_service(settings, payments, from_env)
    gateway = Gateway(settings)
    app = Starlette(
        routes=all_routes(own_routes(gateway, payments=service is not None)),
        exception_handlers={ApiError: api_error, HTTPException: http_error},
        lifespan=Lifespan(gateway, service, listen_url),
    )
    app.state.gateway = gateway
    if service is not None:
        gateway.fronted = FRONTED_ROUTES
    app.state.budgets = gateway.auth.budgets
    add_middleware(app, gateway)
    return app


def create_served_app() -> Starlette:
    """`commercecore serve`'s factory (one call per worker process): create_app() from the environment,
    whose lifespan, once started, moves everything imported and built so far out of the garbage
    collector's sight (gc.freeze): a full collection then walks only what requests created, not the
    ~70 000 objects of the modules and the schema cache, and its pauses in the tail latency shrink from
    20-40 ms to under a millisecond on the benchmark machine. (Not in create_app: tests build many apps in
    one process, and a frozen object is never freed.)"""
    app = create_app()
    app.state.freeze_gc = True
    return app
