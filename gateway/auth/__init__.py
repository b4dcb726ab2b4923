"""Authentication: JWTs in (cookie or Bearer) and out, CSRF, argon2id passwords, and the /auth/* and
/me/password endpoints.

- `tokens`: the JWTs (signed, verified), the identity of a request from its Bearer header or cookie;
- `csrf`: the session and CSRF cookies, and the CSRF check of cookie-authenticated writes;
- `passwords`: argon2id hashes and the rules of a new password;
- `endpoints`: `AuthService`, the endpoints over the `auth.*` functions;
- the budgets and the 429 of the login delays are gateway.throttle's (checkout and refund spend them too).
"""

from gateway.auth.csrf import Cookies, Csrf
from gateway.auth.endpoints import AuthService
from gateway.auth.passwords import Passwords, check_password_rules
from gateway.auth.tokens import Tokens, authenticate, identity_from_claims

__all__ = [
    "AuthService",
    "Cookies",
    "Csrf",
    "Passwords",
    "Tokens",
    "authenticate",
    "check_password_rules",
    "identity_from_claims",
]
