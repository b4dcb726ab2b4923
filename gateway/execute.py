"""The transaction stage: a Query's statements run in one transaction on the gateway's pool.

The context of the transaction (role, claims, request id, the role's settings, the shop's) is the
request's (db.RequestContext); an anonymous request first waits for its share of the pool
(gateway.anonymous). With replicas (DATABASE_REPLICA_URLS), a read of a visitor or a customer may run on
one instead (gateway.replicas), and a write's result carries its commit position. A serialization failure
or a deadlock is retried once. Every failure becomes an ApiError here: a database error through the
SQLSTATE table (a value PostgreSQL could not parse names its argument or column), a session that ended
401, no free connection or a broken one 503 (`errors.database_failure`, the mapping every path shares).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway import db
from gateway.anonymous import AnonymousShare
from gateway.auth.csrf import Cookies
from gateway.errors import RETRYABLE, ApiError, database_failure
from gateway.query import Query
from gateway.replicas import PRIMARY, Replica, Replicas, client_lsn, replica_fault
from gateway.request import ApiRequest
from gateway.settings import Settings

log = logging.getLogger("commercecore.gateway")


class Sessions(Protocol):
    def session_ended(self) -> ApiError: ...


class Gateway(Protocol):
    """What the transaction stage uses of the gateway (gateway.app.Gateway)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None: ...

    @property
    def anonymous(self) -> AnonymousShare: ...

    @property
    def auth(self) -> Sessions: ...

    @property
    def replicas(self) -> Replicas | None: ...


async def execute(api: ApiRequest, query: Query, gateway: Gateway) -> db.Result:
    """The query's result, or the ApiError its failure is (see the module's docstring)."""
    context = db.RequestContext(
        api.identity,
        query.plan.read_only,
        request_id=api.request_id,
        method=api.method,
        path=api.url_path,
        role_settings=api.schema.role_settings,
        shop_settings=gateway.settings.order_settings,
    )
    lsn = client_lsn(api.headers, Cookies(gateway.settings.cookie_secure))
    for attempt in (1, 2):
        try:
            return await run(gateway, context, query, lsn)
        except db.StatementError as exc:
            sqlstate = exc.error.sqlstate or ""
            api.state["sqlstate"] = sqlstate
            if sqlstate in RETRYABLE and attempt == 1:
                log.info("retrying after %s (%s)", sqlstate, exc.error.diag.message_primary)
                continue
            raise statement_error(api, exc) from None
        except db.SessionInactive:
            raise gateway.auth.session_ended() from None
        except psycopg.OperationalError as exc:  # no free connection (PoolTimeout), or it broke
            if not isinstance(exc, PoolTimeout):
                log.error("database unreachable: %s", str(exc).strip())
            raise database_failure(exc, authenticated=api.identity.authenticated) from None
    raise AssertionError("unreachable")


async def run(
    gateway: Gateway, context: db.RequestContext, query: Query, lsn: int | None = None
) -> db.Result:
    """The statements on a replica when one may answer them (see gateway.replicas; `lsn`: the commit
    position the client last wrote at), else on the primary."""
    pool = gateway.pool
    assert pool is not None, "requests are served once the lifespan opened the pool"
    replicas = gateway.replicas
    if replicas is None:
        return await on_pool(gateway.settings, pool, gateway.anonymous, context, query)
    reason = replicas.primary_reason(context.identity, query.plan)
    if reason is None:
        replica, reason = await replicas.choose(lsn)
        if replica is not None:
            served = await on_replica(gateway.settings, replicas, replica, reason, context, query)
            if isinstance(served, db.Result):
                return served
            reason = served
    replicas.count(PRIMARY, reason)
    commit_lsn = not query.plan.read_only
    return await on_pool(gateway.settings, pool, gateway.anonymous, context, query, commit_lsn=commit_lsn)


async def on_replica(
    settings: Settings,
    replicas: Replicas,
    replica: Replica,
    reason: str,
    context: db.RequestContext,
    query: Query,
) -> db.Result | str:
    """The read's result from the replica, or why the primary must answer it instead: the replica broke
    (`failover`), or does not have the session yet (`session`: a login it has not replayed)."""
    try:
        with replicas.using(replica) as pool:
            result = await on_pool(settings, pool, replica.share, context, query)
    except db.SessionInactive:
        return "session"
    except psycopg.OperationalError as exc:  # a lost connection, a closed pool, no free connection
        if not isinstance(exc, PoolTimeout):
            replicas.failed(replica, exc)
        return "failover"
    except db.StatementError as exc:
        if replica_fault(exc):
            log.info("read retried on the primary after %s on replica %s", exc.error.sqlstate, replica.label)
            return "failover"
        replicas.count(replica.label, reason)  # the request's own error: the primary would say the same
        raise
    replicas.count(replica.label, reason)
    return result


async def on_pool(
    settings: Settings,
    pool: AsyncConnectionPool[Any],
    share: AnonymousShare,
    context: db.RequestContext,
    query: Query,
    *,
    commit_lsn: bool = False,
) -> db.Result:
    """The statements on a connection of `pool`; an anonymous request first waits for its `share` of it."""
    prepare = settings.prepared_statements
    statements = query.statements
    if context.identity is not None and context.identity.authenticated:
        timeout = settings.pool_timeout
        return await db.run(
            pool, context, statements, timeout=timeout, prepare=prepare, commit_lsn=commit_lsn
        )
    async with share.hold(settings.pool_timeout) as wait:
        return await db.run(pool, context, statements, timeout=wait, prepare=prepare, commit_lsn=commit_lsn)


def statement_error(api: ApiRequest, exc: db.StatementError) -> ApiError:
    """A database error as the API's; a value PostgreSQL could not parse names the argument or column it
    belongs to. A 5xx goes to the log with the database's own message."""
    error = ApiError.from_database(exc.error, authenticated=api.identity.authenticated)
    sqlstate = exc.error.sqlstate or ""
    if sqlstate.startswith("22") and exc.statement is not None:
        field_name = db.failed_parameter(exc.error, exc.statement.fields)
        if field_name is not None:
            error = ApiError(
                400,
                sqlstate,
                f"{field_name}: {exc.error.diag.message_primary}",
                details={"code": "invalid_input", "field": field_name},
                hint=error.hint,
            )
    if error.status >= 500:
        log.error(
            "database error %s on %s %s: %s", sqlstate, api.method, api.url_path, str(exc.error).strip()
        )
    return error
