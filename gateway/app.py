"""The Starlette application: `create_app(settings)`; the lifespan owns the connection pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.settings import Settings


async def health(request: Request) -> JSONResponse:
    """200 when the database answers, 503 when it does not."""
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=5) as conn:
            await conn.execute("select 1")
    except (psycopg.Error, TimeoutError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JSONResponse({"status": "unavailable", "database": detail}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the gateway; without settings they are read from the environment."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.database_url,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            open=False,
            kwargs={"application_name": "commercecore-gateway"},
        )
        # the gateway starts even when the database is down; /health says so until it is back
        await pool.open(wait=False)
        app.state.pool = pool
        app.state.settings = settings
        try:
            yield
        finally:
            await pool.close()

    return Starlette(routes=[Route("/health", health, methods=["GET", "HEAD"])], lifespan=lifespan)
