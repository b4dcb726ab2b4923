"""Authentication: JWTs in (cookie or Bearer) and out, CSRF, argon2id passwords, and the /auth/* and
/me/password endpoints with their throttles.

What the database decides stays there: accounts, the delays after failed logins and sessions (with the role
each was issued with) are the `auth.*` functions (procedures/auth/). The gateway hashes passwords, signs
and checks tokens, counts the budgets of gateway.throttle, and maps outcomes to HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import jwt
import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import db
from gateway.errors import ApiError, unauthorized, unavailable
from gateway.http import SAFE_METHODS, read_json_object, url_path
from gateway.settings import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, Settings
from gateway.throttle import Budgets, client_key, email_account, user_account

log = logging.getLogger("commercecore.auth")

SESSION_COOKIE = "cc_session"
CSRF_COOKIE = "cc_csrf"
# a browser keeps a cookie of this prefix only when Secure, without Domain and with Path=/ (RFC 6265bis)
HOST_PREFIX = "__Host-"
CSRF_HEADER = "x-csrf-token"
TOKEN_ROLES = frozenset({"app_readwrite", "app_admin"})
REQUIRED_CLAIMS = ["exp", "iat", "jti", "sub", "role"]
MAX_TOKEN_BYTES = 8192
# verified tokens remembered per process (see Tokens.decode), and for how long at most
VERIFIED_LIMIT = 10_000
VERIFIED_TTL = 300.0


# -- tokens ------------------------------------------------------------------------------------------


class Tokens:
    """Signs and checks the gateway's JWTs (algorithm pinned, exp/iat/jti/sub/role required)."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.signing_key = settings.signing_key
        self.verifying_key = settings.verifying_key
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway
        self.ttl = settings.token_ttl
        self.csrf_key = hashlib.sha256(b"commercecore-csrf\0" + self.signing_key.encode()).digest()
        # token -> (its verified claims, until when they may be reused); see decode()
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}

    def new_session(self) -> tuple[str, datetime]:
        """A fresh token id and the moment a token issued now expires (recorded by auth.create_session)."""
        return str(uuid.uuid4()), datetime.fromtimestamp(int(time.time()) + self.ttl, UTC)

    def sign(self, claims: Mapping[str, Any], jti: str, expires: datetime) -> str:
        """A token for the claims the database gave (sub, role, ...) with iat, exp, jti and aud added."""
        exp = int(expires.timestamp())
        payload = {**claims, "iat": exp - self.ttl, "exp": exp, "jti": jti}
        if self.audience:
            payload["aud"] = self.audience
        return jwt.encode(payload, self.signing_key, algorithm=self.algorithm)

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims, or ApiError 401 saying why not.

        A token that passed every check is remembered (its claims) until its `exp`, for at most
        VERIFIED_TTL seconds: the next request with the same token skips the signature and claim checks,
        which depend on nothing but the token and the key (fixed for the process) and, for `exp`, the
        clock. Revocation is not among them: the session is checked in the database on every request.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise unauthorized("The token is too large.")
        now = time.time()
        verified = self._verified.get(token)
        if verified is not None:
            claims, until = verified
            if now < until:
                return dict(claims)
            del self._verified[token]
        claims = self._verify(token)
        if len(self._verified) >= VERIFIED_LIMIT:
            self._verified.clear()
        # exp is a number: PyJWT refuses a token whose exp is not
        self._verified[token] = (claims, min(now + VERIFIED_TTL, float(claims["exp"])))
        return dict(claims)

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.verifying_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("The token is not valid yet.") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("The token is for another audience.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"The token lacks the {exc.claim!r} claim.") from None
        except jwt.InvalidTokenError:
            raise unauthorized("The token is not valid.") from None
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat > time.time() + self.leeway:
            raise unauthorized("The token was issued in the future.")
        if claims["role"] not in TOKEN_ROLES:
            raise unauthorized("The token's role is not one a token may carry.")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or len(sub) > 18:
            raise unauthorized("The token's subject is not a user id.")
        try:
            uuid.UUID(str(claims["jti"]))
        except ValueError:
            raise unauthorized("The token's id is not a session id.") from None
        return claims

    def csrf_token(self, jti: str) -> str:
        """The CSRF token of a session: an HMAC of its jti (a planted cookie cannot match another session)."""
        return hmac.new(self.csrf_key, jti.encode(), hashlib.sha256).hexdigest()


def identity_from_claims(claims: Mapping[str, Any], via: str) -> db.Identity:
    return db.Identity(
        role=str(claims["role"]),
        claims=dict(claims),
        jti=str(claims["jti"]),
        user_id=int(claims["sub"]),
        via=via,
    )


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be `Bearer <token>`.")
    return token.strip()


def authenticate(request: Request, tokens: Tokens, cookies: Cookies) -> db.Identity:
    """The request's identity: Bearer first, then the session cookie, else anonymous; CSRF for cookies."""
    token = bearer_token(request)
    if token is not None:
        return identity_from_claims(tokens.decode(token), "bearer")
    cookie = request.cookies.get(cookies.session)
    if not cookie:
        return db.ANONYMOUS
    try:
        claims = tokens.decode(cookie)
    except ApiError as exc:
        exc.headers.update(cookies.clear_session())
        raise
    identity = identity_from_claims(claims, "cookie")
    if request.method not in SAFE_METHODS:
        check_csrf(request, tokens, identity, cookies)
    return identity


def check_csrf(request: Request, tokens: Tokens, identity: db.Identity, cookies: Cookies) -> None:
    """Cookie-authenticated writes carry X-CSRF-Token equal to the CSRF cookie (and to the session's)."""
    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(cookies.csrf, "")
    expected = tokens.csrf_token(identity.jti or "")
    # every comparison runs, each in constant time
    ok = hmac.compare_digest(header.encode(), cookie.encode()) & hmac.compare_digest(
        header.encode(), expected.encode()
    )
    if not header or not ok:
        raise ApiError(
            403,
            "CC403",
            f"A cookie-authenticated write needs the X-CSRF-Token header equal to the {cookies.csrf} cookie.",
            details={"code": "csrf_failed"},
            hint=f"Read the {cookies.csrf} cookie and send its value in X-CSRF-Token; or use a Bearer token.",
        )


# -- cookies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cookies:
    """The session cookie (HttpOnly, the JWT) and the CSRF cookie (readable by the page's script).

    Secure cookies are named with the `__Host-` prefix: a browser then accepts them only over HTTPS, for
    this very host (no Domain) and Path=/, so neither a sibling subdomain nor a plain-http response can
    plant or overwrite them. Without Secure (demo mode, a try on http://127.0.0.1, where a browser refuses
    `__Host-` cookies) they keep the plain names cc_session and cc_csrf.
    """

    secure: bool

    @property
    def session(self) -> str:
        return HOST_PREFIX + SESSION_COOKIE if self.secure else SESSION_COOKIE

    @property
    def csrf(self) -> str:
        return HOST_PREFIX + CSRF_COOKIE if self.secure else CSRF_COOKIE

    def _cookie(self, name: str, value: str, max_age: int, *, http_only: bool) -> str:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "SameSite=Lax"]
        if max_age == 0:
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if http_only:
            parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)

    def issued(self, token: str, csrf: str, ttl: int) -> list[str]:
        """The Set-Cookie values of a new session."""
        return [
            self._cookie(self.session, token, ttl, http_only=True),
            self._cookie(self.csrf, csrf, ttl, http_only=False),
        ]

    def cleared(self) -> list[str]:
        """The Set-Cookie values that delete both cookies."""
        return [
            self._cookie(self.session, "", 0, http_only=True),
            self._cookie(self.csrf, "", 0, http_only=False),
        ]

    def clear_session(self) -> dict[str, str]:
        """Deletes the session cookie, as the headers of an ApiError (a plain mapping holds one Set-Cookie:
        the session cookie is the one that matters)."""
        return {"Set-Cookie": self._cookie(self.session, "", 0, http_only=True)}


def set_cookies(response: Response, cookies: list[str]) -> None:
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)


# -- passwords ---------------------------------------------------------------------------------------


class Passwords:
    """argon2id hashing off the event loop, a bounded number at a time (each takes ~64 MiB)."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self.limiter = anyio.CapacityLimiter(4)
        # an unknown email is verified against this, so that it takes as long as a known one
        self.dummy_hash = self.hasher.hash(uuid.uuid4().hex)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hasher.hash, password, limiter=self.limiter)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return (
                    self.hasher.verify(stored_hash or self.dummy_hash, password) and stored_hash is not None
                )
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(check, limiter=self.limiter)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def check_password_rules(password: Any, field: str = "password") -> str:
    if not isinstance(password, str):
        raise invalid_input(field, "must be a string")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise invalid_input(
            field, f"must have at least {PASSWORD_MIN_LENGTH} characters", min_length=PASSWORD_MIN_LENGTH
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise invalid_input(
            field, f"must have at most {PASSWORD_MAX_LENGTH} characters", max_length=PASSWORD_MAX_LENGTH
        )
    return password


def invalid_input(field: str, problem: str, **extra: Any) -> ApiError:
    return ApiError(
        422,
        "PT422",
        f"{field} {problem}.",
        details={"code": "invalid_input", "field": field, **extra},
    )


def _string_field(body: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_input(name, "is required", reason="missing")
        return ""
    if not isinstance(value, str):
        raise invalid_input(name, "must be a string")
    return value


def _only_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise ApiError(
                400,
                "PGRST100",
                f"Unknown field {key!r}; send only {', '.join(allowed)}.",
                details={"code": "unknown_argument", "field": key},
            )


# -- login failures --------------------------------------------------------------------------------------


def login_delayed(retry_after: int, settings: Settings) -> ApiError:
    return ApiError(
        429,
        "CC429",
        "Too many failed sign-in attempts for this account from this address; try again later.",
        details={
            "code": "too_many_attempts",
            "retry_after": retry_after,
            "free_attempts": settings.login_free_attempts,
            "delay_base_seconds": settings.login_delay_base,
            "delay_max_seconds": settings.login_delay_max,
        },
        headers={"Retry-After": str(retry_after)},
        hint="Wait Retry-After seconds (each further failure doubles it); other addresses are not delayed.",
    )


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


# -- the endpoints -------------------------------------------------------------------------------------


@dataclass
class AuthService:
    """The /auth/* endpoints and POST /me/password, over the auth.* functions."""

    settings: Settings
    tokens: Tokens
    passwords: Passwords
    budgets: Budgets
    cookies: Cookies

    @classmethod
    def create(cls, settings: Settings) -> AuthService:
        return cls(
            settings,
            Tokens(settings),
            Passwords(settings),
            Budgets(settings.rate_limits),
            Cookies(settings.cookie_secure),
        )

    def authenticate(self, request: Request) -> db.Identity:
        return authenticate(request, self.tokens, self.cookies)

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
            return await db.run(
                pool,
                session,
                statements,
                role_settings={},
                read_only=read_only,
                request_id=request.state.request_id,
                method=request.method,
                path=url_path(request.scope),
                timeout=self.settings.pool_timeout,
                as_service=True,
                prepare=self.settings.prepared_statements,
            )
        except db.SessionInactive:
            raise self.session_ended() from None
        except db.StatementError as exc:
            raise ApiError.from_database(exc.error, authenticated=session is not None) from None
        except PoolTimeout:
            raise unavailable("No database connection is free; retry shortly.") from None
        except psycopg.OperationalError:
            raise unavailable("The database is unreachable; retry shortly.") from None

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
            raise login_delayed(_seconds_until(retry_at), self.settings)
        return (account[0] if account else None), int(failed)

    async def _failure(self, request: Request, email: str, client: str) -> int | None:
        """Records a failed attempt of (email, client); the seconds its next attempt must wait, if any."""
        result = await self._run(
            request,
            [
                db.Statement(
                    "select retry_at from auth.record_login_failure(%s, %s::inet, %s,"
                    " make_interval(secs => %s), make_interval(secs => %s))",
                    [
                        email,
                        client,
                        self.settings.login_free_attempts,
                        self.settings.login_delay_base,
                        self.settings.login_delay_max,
                    ],
                )
            ],
        )
        retry_at = result.rows[0][0][0] if result.rows[0] else None
        return _seconds_until(retry_at) if retry_at is not None else None

    async def _check_password(
        self, request: Request, action: str, email: str, password: str
    ) -> tuple[int, str, tuple[db.Statement, ...]]:
        """(user_id, role, the statements that record the success) when the password is right; else 401,
        or 429 while this client's delay for this address runs or a budget is spent.

        Every checked path verifies one argon2 hash and records the outcome, so that the answer and its
        timing are the same for unknown addresses and wrong passwords. A hash made with older argon2
        parameters is replaced by one made with the current ones, the only moment the password is known.
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
        if stored_hash is not None and self.passwords.needs_rehash(stored_hash):
            new_hash = await self.passwords.hash(password)
            success.append(
                db.Statement(
                    "select auth.upgrade_password_hash(%s, %s, %s)", [user_id, stored_hash, new_hash]
                )
            )
        return user_id, str(row[1]), tuple(success)

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
        set_cookies(response, self.cookies.issued(token, self.tokens.csrf_token(jti), self.tokens.ttl))
        response.headers["cache-control"] = "no-store"
        return response

    def _me_statements(self, user_id: int, role: str) -> tuple[db.Statement, ...]:
        """Switch to the user's role and read api.me(): the user shape comes from the database."""
        query, params = db.request_context(role, {"sub": str(user_id), "role": role}, {})
        return (db.Statement(query, params), db.Statement("select api.me()::text"))

    # endpoints -------------------------------------------------------------------------------------

    async def signup(self, request: Request) -> Response:
        body = await read_json_object(request, self.settings.body_limit, empty_ok=False)
        _only_fields(body, ("email", "password", "full_name"))
        email = _string_field(body, "email")
        full_name = _string_field(body, "full_name", required=False)
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
        _only_fields(body, ("email", "password"))
        email = _string_field(body, "email")
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise invalid_input("password", "is required", reason="missing")
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
        return JSONResponse(
            {"access_token": token, "token_type": "bearer", "expires_in": self.tokens.ttl},
            headers={"cache-control": "no-store"},
        )

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
            raise login_delayed(_seconds_until(row[2]), self.settings)
        return row[0], str(row[1])

    async def change_password(self, request: Request) -> Response:
        identity = self.authenticate(request)
        if not identity.authenticated or identity.user_id is None:
            raise unauthorized("Sign in to change your password.", "not_authenticated")
        request.state.role = identity.role
        request.state.user_id = identity.user_id
        body = await read_json_object(request, self.settings.body_limit, empty_ok=False)
        _only_fields(body, ("current_password", "new_password"))
        current = body.get("current_password")
        if not isinstance(current, str) or not current:
            raise invalid_input("current_password", "is required", reason="missing")
        new = check_password_rules(body.get("new_password"), "new_password")
        if new == current:
            raise invalid_input("new_password", "must differ from the current password", reason="unchanged")
        client = client_key(request.scope)
        self.budgets.spend_both("password", client, user_account(identity.user_id))
        stored_hash, email = await self._current_password(request, identity)
        if not await self.passwords.verify(stored_hash, current):
            retry_after = await self._failure(request, email, client)
            raise ApiError(
                403,
                "CC403",
                "The current password is not correct.",
                details={"code": "invalid_credentials", "field": "current_password"}
                | ({"retry_after": retry_after} if retry_after is not None else {}),
            )
        new_hash = await self.passwords.hash(new)
        token, jti, _ = await self._issue(
            request,
            identity.user_id,
            before=(db.Statement("select auth.change_password(%s, %s)", [identity.user_id, new_hash]),),
            session=identity,
        )
        if identity.via == "cookie":
            response: Response = JSONResponse({"changed": True}, headers={"cache-control": "no-store"})
            return self._with_cookies(response, token, jti)
        return JSONResponse(
            {"changed": True, "access_token": token, "token_type": "bearer", "expires_in": self.tokens.ttl},
            headers={"cache-control": "no-store"},
        )


def _seconds_until(moment: datetime) -> int:
    return max(1, math.ceil((moment - datetime.now(UTC)).total_seconds()))
