"""The gateway's JWTs: signed when a session starts, checked on every request, and the request's identity
taken from a Bearer header or the session cookie."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.requests import Request

from gateway import db
from gateway.auth.csrf import Cookies, Csrf
from gateway.errors import ApiError, unauthorized
from gateway.http import SAFE_METHODS
from gateway.settings import Settings

TOKEN_ROLES = frozenset({"app_readwrite", "app_admin"})
REQUIRED_CLAIMS = ["exp", "iat", "jti", "sub", "role"]
MAX_TOKEN_BYTES = 8192
# verified tokens remembered per process (see Tokens.decode), and for how long at most
VERIFIED_LIMIT = 10_000
VERIFIED_TTL = 300.0


class Tokens:
    """Signs and checks the gateway's JWTs (algorithm pinned, exp/iat/jti/sub/role required)."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.signing_key = settings.signing_key
        self.verifying_key = settings.verifying_key
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway
        self.ttl = settings.token_ttl
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
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        """What PyJWT leaves to the application: a past iat, a role a token may carry, a user id as the
        subject and a session id as the token id."""
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


def authenticate(request: Request, tokens: Tokens, csrf: Csrf, cookies: Cookies) -> db.Identity:
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
        csrf.check(request, identity.jti or "", cookies)
    return identity
