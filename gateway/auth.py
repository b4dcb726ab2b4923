"""Authentication: JWTs in (cookie or Bearer) and out, CSRF, argon2id passwords, login throttling, and
the /auth/* and /me/password endpoints.

What the database decides stays there: accounts, lockouts and sessions are the `auth.*` functions
(procedures/auth.sql). The gateway hashes passwords, signs and checks tokens, and maps outcomes to HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
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
from gateway.http import SAFE_METHODS, client_address, read_json_object, url_path
from gateway.settings import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, Settings

log = logging.getLogger("commercecore.auth")

SESSION_COOKIE = "cc_session"
CSRF_COOKIE = "cc_csrf"
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


def authenticate(request: Request, tokens: Tokens) -> db.Identity:
    """The request's identity: Bearer first, then the session cookie, else anonymous; CSRF for cookies."""
    token = bearer_token(request)
    if token is not None:
        return identity_from_claims(tokens.decode(token), "bearer")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return db.ANONYMOUS
    try:
        claims = tokens.decode(cookie)
    except ApiError as exc:
        exc.headers.update(clear_cookie_headers())
        raise
    identity = identity_from_claims(claims, "cookie")
    if request.method not in SAFE_METHODS:
        check_csrf(request, tokens, identity)
    return identity


def check_csrf(request: Request, tokens: Tokens, identity: db.Identity) -> None:
    """Cookie-authenticated writes carry X-CSRF-Token equal to the cc_csrf cookie (and to the session's)."""
    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    expected = tokens.csrf_token(identity.jti or "")
    # every comparison runs, each in constant time
    ok = hmac.compare_digest(header.encode(), cookie.encode()) & hmac.compare_digest(
        header.encode(), expected.encode()
    )
    if not header or not ok:
        raise ApiError(
            403,
            "CC403",
            "A cookie-authenticated write needs the X-CSRF-Token header, equal to the cc_csrf cookie.",
            details={"code": "csrf_failed"},
            hint="Read the cc_csrf cookie and send its value in X-CSRF-Token; or use a Bearer token.",
        )


# -- cookies -----------------------------------------------------------------------------------------


def _cookie(name: str, value: str, max_age: int, *, http_only: bool, secure: bool) -> str:
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "SameSite=Lax"]
    if max_age == 0:
        parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def session_cookies(token: str, csrf: str, ttl: int, *, secure: bool) -> list[str]:
    return [
        _cookie(SESSION_COOKIE, token, ttl, http_only=True, secure=secure),
        _cookie(CSRF_COOKIE, csrf, ttl, http_only=False, secure=secure),
    ]


def clear_cookie_headers() -> dict[str, str]:
    # only one Set-Cookie fits a plain mapping: the session cookie is the one that matters
    return {"Set-Cookie": _cookie(SESSION_COOKIE, "", 0, http_only=True, secure=False)}


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


# -- login throttling (before any database work) -----------------------------------------------------


class RateLimiter:
    """Attempts per key (client address) in a sliding minute; memory stays bounded."""

    def __init__(self, per_minute: int, max_keys: int = 10000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self.attempts: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float | None = None) -> int:
        """Counts an attempt; returns 0 when allowed, else the seconds to wait."""
        if self.per_minute <= 0:
            return 0
        now = time.monotonic() if now is None else now
        window = self.attempts.get(key)
        if window is None:
            if len(self.attempts) >= self.max_keys:
                self._prune(now)
            window = self.attempts[key] = deque()
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return max(1, int(window[0] + 60 - now) + 1)
        window.append(now)
        return 0

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self.attempts.items() if not w or w[-1] <= now - 60]:
            del self.attempts[key]
        while len(self.attempts) >= self.max_keys:
            self.attempts.pop(next(iter(self.attempts)))


def too_many_attempts(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "CC429",
        "Too many failed sign-in attempts; try again later.",
        details={"code": "too_many_attempts", "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def invalid_credentials() -> ApiError:
    return ApiError(
        401,
        "CC401",
        "The email address or the password is not correct.",
        details={"code": "invalid_credentials"},
        headers={"WWW-Authenticate": "Bearer"},
    )


# -- the endpoints -------------------------------------------------------------------------------------


@dataclass
class AuthService:
    """The /auth/* endpoints and POST /me/password, over the auth.* functions."""

    settings: Settings
    tokens: Tokens
    passwords: Passwords
    limiter: RateLimiter

    @classmethod
    def create(cls, settings: Settings) -> AuthService:
        return cls(settings, Tokens(settings), Passwords(settings), RateLimiter(settings.login_rate))

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
            raise session_ended() from None
        except db.StatementError as exc:
            raise ApiError.from_database(exc.error, authenticated=session is not None) from None
        except PoolTimeout:
            raise unavailable("No database connection is free; retry shortly.") from None
        except psycopg.OperationalError:
            raise unavailable("The database is unreachable; retry shortly.") from None

    def _lockout(self) -> str:
        return f"{self.settings.login_lockout} seconds"

    async def _lookup(self, request: Request, email: str) -> tuple[Any, ...] | None:
        result = await self._run(
            request,
            [
                db.Statement(
                    "select user_id, role, password_hash, locked_until from auth.login_lookup(%s)", [email]
                )
            ],
            read_only=True,
        )
        rows = result.rows[0]
        return rows[0] if rows else None

    async def _failure(self, request: Request, email: str) -> ApiError:
        result = await self._run(
            request,
            [
                db.Statement(
                    "select failed_attempts, locked_until"
                    " from auth.record_login_failure(%s, %s, %s::interval)",
                    [email, self.settings.login_max_failures, self._lockout()],
                )
            ],
        )
        row = result.rows[0][0] if result.rows[0] else None
        if row is not None and row[1] is not None:
            return too_many_attempts(_seconds_until(row[1]))
        return invalid_credentials()

    def _throttle(self, request: Request) -> None:
        wait = self.limiter.hit(client_address(request.scope))
        if wait:
            raise too_many_attempts(wait)

    async def _check_password(
        self, request: Request, email: str, password: str
    ) -> tuple[int, str, tuple[db.Statement, ...]]:
        """(user_id, role, the statements that record the success) when the password is right and no
        lockout runs; else 401 or 429.

        Every path verifies one argon2 hash and records the outcome, so that the answer and its timing
        are the same for unknown addresses, wrong passwords and locked accounts. A hash made with older
        argon2 parameters is replaced by one made with the current ones, the only moment the password is
        known.
        """
        row = await self._lookup(request, email)
        stored_hash = row[2] if row is not None else None
        ok = await self.passwords.verify(stored_hash, password)
        if row is None or not ok or row[3] is not None or row[1] not in TOKEN_ROLES:
            raise await self._failure(request, email)
        user_id = int(row[0])
        success = [db.Statement("select auth.record_login_success(%s)", [user_id])]
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

        The claims are the database's (auth.user_claims); the gateway adds iat, exp, jti and aud.
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
        cookies = session_cookies(
            token, self.tokens.csrf_token(jti), self.tokens.ttl, secure=self.settings.cookie_secure
        )
        set_cookies(response, cookies)
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
        self._throttle(request)
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
        self._throttle(request)
        user_id, role, success = await self._check_password(request, email, password)
        request.state.user_id, request.state.role = user_id, role
        token, jti, result = await self._issue(
            request, user_id, before=success, after=self._me_statements(user_id, role)
        )
        user_text = result.rows[-1][0][0]
        response = Response((user_text or "null").encode(), media_type="application/json")
        return self._with_cookies(response, token, jti)

    async def token(self, request: Request) -> Response:
        email, password = await self._credentials(request)
        self._throttle(request)
        user_id, role, success = await self._check_password(request, email, password)
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
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.headers.append(
                "set-cookie",
                _cookie(name, "", 0, http_only=name == SESSION_COOKIE, secure=self.settings.cookie_secure),
            )
        return response

    def _optional_identity(self, request: Request) -> db.Identity | None:
        """Logout works with any token state: a bad or expired token has nothing left to revoke."""
        try:
            identity = authenticate(request, self.tokens)
        except ApiError as exc:
            if exc.status == 403:
                raise
            return None
        return identity if identity.authenticated else None

    async def change_password(self, request: Request) -> Response:
        identity = authenticate(request, self.tokens)
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
        self._throttle(request)
        lookup = await self._run(
            request,
            [
                db.Statement(
                    "select l.password_hash, l.locked_until, c ->> 'email' from auth.user_claims(%s) as c,"
                    " auth.login_lookup(c ->> 'email') as l",
                    [identity.user_id],
                )
            ],
            read_only=True,
            session=identity,
        )
        row = lookup.rows[0][0] if lookup.rows[0] else None
        if row is None:
            raise session_ended()
        ok = await self.passwords.verify(row[0], current)
        if not ok or row[1] is not None:
            error = await self._failure(request, row[2])
            if error.status == 429:
                raise error
            raise ApiError(
                403,
                "CC403",
                "The current password is not correct.",
                details={"code": "invalid_credentials", "field": "current_password"},
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


def session_ended() -> ApiError:
    error = unauthorized(
        "The session has ended (signed out, password changed or expired).", "session_revoked"
    )
    error.headers.update(clear_cookie_headers())
    return error


def _seconds_until(moment: datetime) -> int:
    return max(1, int((moment - datetime.now(UTC)).total_seconds()) + 1)
