"""The /auth/* endpoints and POST /me/password: sign up, sign in (cookies or a Bearer token), sign out and
change the password, over the `auth.*` functions (procedures/auth/).

What the database decides stays there: accounts, the delays after failed logins and sessions (with the role
each was issued with). These endpoints hash and check passwords, sign tokens, spend the budgets of
gateway.throttle and map the outcomes to HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import db
from gateway.auth.csrf import Cookies, Csrf, set_cookies
from gateway.auth.passwords import Passwords, check_password_rules
from gateway.auth.tokens import TOKEN_ROLES, Tokens, authenticate
from gateway.errors import ApiError, database_failure, invalid_input, unauthorized
from gateway.http import read_json_object, url_path
from gateway.settings import PASSWORD_MAX_LENGTH, Settings
from gateway.throttle import Budgets, client_key, email_account, login_delayed, seconds_until, user_account

NO_STORE = {"cache-control": "no-store"}


def invalid_credentials(retry_after: int | None = None) -> ApiError:
    """401; with `retry_after` when this failure started a delay before the next attempt."""
    details: dict[str, Any] = {"code": "invalid_credentials"}
    if retry_after is not None:
        details["retry_after"] = retry_after
    return ApiError(
        401,
        "CC401",
        "The email address or the password is not correct.",
        details=details,
        headers={"WWW-Authenticate": "Bearer"},
    )


def wrong_current_password(retry_after: int | None) -> ApiError:
    return ApiError(
        403,
        "CC403",
        "The current password is not correct.",
        details={"code": "invalid_credentials", "field": "current_password"}
        | ({"retry_after": retry_after} if retry_after is not None else {}),
    )


def string_field(body: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_input(name, "is required", reason="missing")
        return ""
    if not isinstance(value, str):
        raise invalid_input(name, "must be a string")
    return value


def only_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise ApiError(
                400,
                "PGRST100",
                f"Unknown field {key!r}; send only {', '.join(allowed)}.",
                details={"code": "unknown_argument", "field": key},
            )


def given_password(body: Mapping[str, Any], field: str) -> str:
    """A password the caller says is theirs: any non-empty string (the rules are for new ones)."""
    password = body.get(field)
    if not isinstance(password, str) or not password:
        raise invalid_input(field, "is required", reason="missing")
    return password


def token_body(token: str, ttl: int, **extra: Any) -> dict[str, Any]:
    return {**extra, "access_token": token, "token_type": "bearer", "expires_in": ttl}


@dataclass
class AuthService:
    """The /auth/* endpoints and POST /me/password, over the auth.* functions."""

    settings: Settings
    tokens: Tokens
    passwords: Passwords
    budgets: Budgets
    cookies: Cookies
    csrf: Csrf

    @classmethod
    def create(cls, settings: Settings) -> AuthService:
        return cls(
            settings,
            Tokens(settings),
            Passwords(settings),
            Budgets(settings.rate_limits),
            Cookies(settings.cookie_secure),
            Csrf(settings.signing_key),
        )

    def authenticate(self, request: Request) -> db.Identity:
        return authenticate(request, self.tokens, self.csrf, self.cookies)

    def session_ended(self) -> ApiError:
        """401 for a revoked or expired session, deleting the session cookie."""
        error = unauthorized(
            "The session has ended (signed out, password changed or expired).", "session_revoked"
        )
        error.headers.update(self.cookies.clear_session())
        return error

    # database ------------------------------------------------------------------------------------

    async def _run(
        self,
        request: Request,
        statements: list[db.Statement],
        *,
        read_only: bool = False,
        session: db.Identity | None = None,
    ) -> db.Result:
        """Statements as the authenticator (no request role); checks `session` first when given."""
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        try:
            context = db.RequestContext(
                session,
                read_only,
                request_id=request.state.request_id,
                method=request.method,
                path=url_path(request.scope),
                as_service=True,
            )
            return await db.run(
                pool,
                context,
                statements,
                timeout=self.settings.pool_timeout,
                prepare=self.settings.prepared_statements,
            )
        except db.SessionInactive:
            raise self.session_ended() from None
        except db.StatementError as exc:
            raise database_failure(exc.error, authenticated=session is not None) from None
        except psycopg.OperationalError as exc:  # no free connection (PoolTimeout), or it broke
            raise database_failure(exc, authenticated=session is not None) from None

    async def _lookup(self, request: Request, email: str, client: str) -> tuple[tuple[Any, ...] | None, int]:
        """(the account's row or None, the pair's failures in a row); 429 while the pair's delay runs."""
        result = await self._run(
            request,
            [
                db.Statement("select user_id, role, password_hash from auth.login_lookup(%s)", [email]),
                db.Statement(
                    "select failed_attempts, retry_at from auth.login_delay(%s, %s::inet)", [email, client]
                ),
            ],
            read_only=True,
        )
        account, pair = result.rows
        failed, retry_at = pair[0] if pair else (0, None)
        if retry_at is not None:
            raise login_delayed(seconds_until(retry_at), self.settings)
        return (account[0] if account else None), int(failed)

    async def _failure(self, request: Request, email: str, client: str) -> int | None:
        """Records a failed attempt of (email, client); the seconds its next attempt must wait, if any."""
        settings = self.settings
        result = await self._run(
            request,
            [
                db.Statement(
                    "select retry_at from auth.record_login_failure(%s, %s::inet, %s,"
                    " make_interval(secs => %s), make_interval(secs => %s))",
                    [
                        email,
                        client,
                        settings.login_free_attempts,
                        settings.login_delay_base,
                        settings.login_delay_max,
                    ],
                )
            ],
        )
        retry_at = result.rows[0][0][0] if result.rows[0] else None
        return seconds_until(retry_at) if retry_at is not None else None

    async def _check_password(
        self, request: Request, action: str, email: str, password: str
    ) -> tuple[int, str, tuple[db.Statement, ...]]:
        """(user_id, role, the statements that record the success) when the password is right; else 401,
        or 429 while this client's delay for this address runs or a budget is spent.

        Every checked path verifies one argon2 hash and records the outcome, so that the answer and its
        timing are the same for unknown addresses and wrong passwords.
        """
        client = client_key(request.scope)
        self.budgets.spend(action, "client", client)
        row, failed = await self._lookup(request, email, client)
        if failed:
            # only clients that failed for this address spend its account budget (see gateway.throttle)
            self.budgets.spend(action, "account", email_account(email))
        stored_hash = row[2] if row is not None else None
        ok = await self.passwords.verify(stored_hash, password)
        if row is None or not ok or row[1] not in TOKEN_ROLES:
            raise invalid_credentials(await self._failure(request, email, client))
        user_id = int(row[0])
        success: list[db.Statement] = []
        if failed:
            success.append(db.Statement("select auth.record_login_success(%s, %s::inet)", [user_id, client]))
        success.extend(await self._rehash(user_id, stored_hash, password))
        return user_id, str(row[1]), tuple(success)

    async def _rehash(self, user_id: int, stored_hash: str | None, password: str) -> list[db.Statement]:
        """A hash made with older argon2 parameters is replaced by one made with the current ones, at the
        only moment the password is known."""
        if stored_hash is None or not self.passwords.needs_rehash(stored_hash):
            return []
        new_hash = await self.passwords.hash(password)
        return [
            db.Statement("select auth.upgrade_password_hash(%s, %s, %s)", [user_id, stored_hash, new_hash])
        ]

    async def _issue(
        self,
        request: Request,
        user_id: int,
        *,
        before: tuple[db.Statement, ...] = (),
        after: tuple[db.Statement, ...] = (),
        session: db.Identity | None = None,
    ) -> tuple[str, str, db.Result]:
        """Records a new session between `before` and `after` (one transaction); (token, jti, result).

        The claims are the database's (auth.user_claims); the gateway adds iat, exp, jti and aud. The
        session row records the same role (auth.create_session reads the same user row).
        """
        jti, expires = self.tokens.new_session()
        create = db.Statement(
            "select auth.user_claims(%s)::text, auth.create_session(%s, %s::uuid, %s::timestamptz, %s)",
            [user_id, user_id, jti, expires, request.headers.get("user-agent", "")[:500]],
        )
        result = await self._run(request, [*before, create, *after], session=session)
        claims_text = result.rows[len(before)][0][0]
        if claims_text is None:
            raise unauthorized("The account no longer exists.", "not_authenticated")
        return self.tokens.sign(json.loads(claims_text), jti, expires), jti, result

    def _with_cookies(self, response: Response, token: str, jti: str) -> Response:
        set_cookies(response, self.cookies.issued(token, self.csrf.token(jti), self.tokens.ttl))
        response.headers["cache-control"] = "no-store"
        return response

    def _me_statements(self, user_id: int, role: str) -> tuple[db.Statement, ...]:
        """Switch to the user's role and read api.me(): the user shape comes from the database."""
        query, params = db.request_context(role, {"sub": str(user_id), "role": role}, {})
        return (db.Statement(query, params), db.Statement("select api.me()::text"))

    # endpoints -------------------------------------------------------------------------------------

    async def signup(self, request: Request) -> Response:
        body = await read_json_object(request, self.settings.body_limit, empty_ok=False)
        only_fields(body, ("email", "password", "full_name"))
        email = string_field(body, "email")
        full_name = string_field(body, "full_name", required=False)
        password = check_password_rules(body.get("password"))
        # before the argon2 hash, the expensive part
        self.budgets.spend_both("signup", client_key(request.scope), email_account(email))
        password_hash = await self.passwords.hash(password)
        register = db.Statement(
            "select auth.register_user(%s, %s, %s)::text", [email, full_name, password_hash]
        )
        jti, expires = self.tokens.new_session()
        session = db.Statement(
            "select auth.user_claims(l.user_id)::text,"
            " auth.create_session(l.user_id, %s::uuid, %s::timestamptz, %s)"
            " from auth.login_lookup(%s) as l",
            [jti, expires, request.headers.get("user-agent", "")[:500], email],
        )
        result = await self._run(request, [register, session])
        user_text = result.rows[0][0][0]
        claims = json.loads(result.rows[1][0][0])
        request.state.user_id, request.state.role = int(claims["sub"]), claims.get("role")
        token = self.tokens.sign(claims, jti, expires)
        response = Response(user_text.encode(), status_code=201, media_type="application/json")
        return self._with_cookies(response, token, jti)

    async def _credentials(self, request: Request) -> tuple[str, str]:
        body = await read_json_object(request, self.settings.body_limit, empty_ok=False)
        only_fields(body, ("email", "password"))
        email = string_field(body, "email")
        password = given_password(body, "password")
        if len(password) > PASSWORD_MAX_LENGTH:
            raise invalid_credentials()
        return email, password

    async def login(self, request: Request) -> Response:
        email, password = await self._credentials(request)
        user_id, role, success = await self._check_password(request, "login", email, password)
        request.state.user_id, request.state.role = user_id, role
        token, jti, result = await self._issue(
            request, user_id, before=success, after=self._me_statements(user_id, role)
        )
        user_text = result.rows[-1][0][0]
        response = Response((user_text or "null").encode(), media_type="application/json")
        return self._with_cookies(response, token, jti)

    async def token(self, request: Request) -> Response:
        email, password = await self._credentials(request)
        user_id, role, success = await self._check_password(request, "token", email, password)
        request.state.user_id, request.state.role = user_id, role
        token, _jti, _ = await self._issue(request, user_id, before=success)
        return JSONResponse(token_body(token, self.tokens.ttl), headers=NO_STORE)

    async def logout(self, request: Request) -> Response:
        identity = self._optional_identity(request)
        if identity is not None and identity.jti is not None:
            await self._run(request, [db.Statement("select auth.revoke_session(%s::uuid)", [identity.jti])])
        response = Response(status_code=204)
        set_cookies(response, self.cookies.cleared())
        return response

    def _optional_identity(self, request: Request) -> db.Identity | None:
        """Logout works with any token state: a bad or expired token has nothing left to revoke."""
        try:
            identity = self.authenticate(request)
        except ApiError as exc:
            if exc.status == 403:
                raise
            return None
        return identity if identity.authenticated else None

    async def _current_password(self, request: Request, identity: db.Identity) -> tuple[str | None, str]:
        """(the stored hash, the email) of the signed-in user; 429 while this client's delay for the
        user's address runs (failed password checks here count as failed logins)."""
        client = client_key(request.scope)
        lookup = await self._run(
            request,
            [
                db.Statement(
                    "select l.password_hash, c ->> 'email', d.retry_at from auth.user_claims(%s) as c"
                    " cross join auth.login_lookup(c ->> 'email') as l"
                    " left join auth.login_delay(c ->> 'email', %s::inet) as d on true",
                    [identity.user_id, client],
                )
            ],
            read_only=True,
            session=identity,
        )
        row = lookup.rows[0][0] if lookup.rows[0] else None
        if row is None:
            raise self.session_ended()
        if row[2] is not None:
            raise login_delayed(seconds_until(row[2]), self.settings)
        return row[0], str(row[1])

    def _signed_in(self, request: Request) -> tuple[db.Identity, int]:
        identity = self.authenticate(request)
        if not identity.authenticated or identity.user_id is None:
            raise unauthorized("Sign in to change your password.", "not_authenticated")
        request.state.role = identity.role
        request.state.user_id = identity.user_id
        return identity, identity.user_id

    async def _password_change(self, request: Request) -> tuple[str, str]:
        """(the current password, the new one) of the body of POST /me/password."""
        body = await read_json_object(request, self.settings.body_limit, empty_ok=False)
        only_fields(body, ("current_password", "new_password"))
        current = given_password(body, "current_password")
        new = check_password_rules(body.get("new_password"), "new_password")
        if new == current:
            raise invalid_input("new_password", "must differ from the current password", reason="unchanged")
        return current, new

    async def change_password(self, request: Request) -> Response:
        identity, user_id = self._signed_in(request)
        current, new = await self._password_change(request)
        client = client_key(request.scope)
        self.budgets.spend_both("password", client, user_account(user_id))
        stored_hash, email = await self._current_password(request, identity)
        if not await self.passwords.verify(stored_hash, current):
            raise wrong_current_password(await self._failure(request, email, client))
        new_hash = await self.passwords.hash(new)
        token, jti, _ = await self._issue(
            request,
            user_id,
            before=(db.Statement("select auth.change_password(%s, %s)", [user_id, new_hash]),),
            session=identity,
        )
        if identity.via == "cookie":
            response = JSONResponse({"changed": True}, headers=NO_STORE)
            return self._with_cookies(response, token, jti)
        return JSONResponse(token_body(token, self.tokens.ttl, changed=True), headers=NO_STORE)
