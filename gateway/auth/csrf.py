"""The two cookies of a browser session and the CSRF check of the writes they authenticate.

The session cookie holds the JWT (HttpOnly); the CSRF cookie holds an HMAC of the session's id that the
page's script reads and sends back in X-CSRF-Token. A write authenticated by the cookie must carry that
header, equal to the cookie and to the HMAC of its own session: another site can make the browser send the
cookies, never read them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import ApiError

SESSION_COOKIE = "cc_session"
CSRF_COOKIE = "cc_csrf"
# the commit position of the browser's last write, for reading it back from a replica (gateway.replicas)
LSN_COOKIE = "cc_lsn"
# a browser keeps a cookie of this prefix only when Secure, without Domain and with Path=/ (RFC 6265bis)
HOST_PREFIX = "__Host-"
CSRF_HEADER = "x-csrf-token"


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

    @property
    def lsn(self) -> str:
        return HOST_PREFIX + LSN_COOKIE if self.secure else LSN_COOKIE

    def commit_position(self, lsn: str, max_age: int) -> str:
        """The Set-Cookie value of a write's commit position (HttpOnly: only the gateway reads it)."""
        return self._cookie(self.lsn, lsn, max_age, http_only=True)

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


class Csrf:
    """The CSRF tokens of sessions: an HMAC of the session's id under a key derived from the signing key,
    so a cookie planted by another site cannot match another session."""

    def __init__(self, signing_key: str) -> None:
        self.key = hashlib.sha256(b"commercecore-csrf\0" + signing_key.encode()).digest()

    def token(self, jti: str) -> str:
        return hmac.new(self.key, jti.encode(), hashlib.sha256).hexdigest()

    def check(self, request: Request, jti: str, cookies: Cookies) -> None:
        """Cookie-authenticated writes carry X-CSRF-Token equal to the CSRF cookie and to the session's
        token; 403 otherwise."""
        header = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(cookies.csrf, "")
        expected = self.token(jti)
        # every comparison runs, each in constant time
        ok = hmac.compare_digest(header.encode(), cookie.encode()) & hmac.compare_digest(
            header.encode(), expected.encode()
        )
        if not header or not ok:
            raise ApiError(
                403,
                "CC403",
                "A cookie-authenticated write needs the X-CSRF-Token header equal to the "
                f"{cookies.csrf} cookie.",
                details={"code": "csrf_failed"},
                hint=f"Read the {cookies.csrf} cookie and send its value in X-CSRF-Token; or use a Bearer "
                "token.",
            )
