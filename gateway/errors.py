"""Errors as PostgREST shapes them: `{code, message, details, hint}` and one SQLSTATE -> HTTP table.

Errors raised by the gateway itself carry PostgREST's own codes where one exists (PGRST...) and a
`details` object with a stable machine `code`, the convention the SQL functions follow for PTxyz errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import Response

# SQLSTATE -> HTTP, most specific first (PostgREST's table, "Errors" in its reference, with three
# deliberate differences marked below).
_EXACT: dict[str, int] = {
    "23503": 409,  # foreign key violation
    "23505": 409,  # uniqueness violation
    "25006": 405,  # read only sql transaction (a write under GET)
    "53400": 500,  # config limit exceeded
    "P0001": 400,  # raise exception without errcode
    "42883": 404,  # undefined function
    "42P01": 404,  # undefined table
    "42P17": 500,  # infinite recursion
    # difference 1: a statement cut off by the role's statement_timeout is the database not answering in
    # time, not a fault: 504 tells clients and load balancers that a retry later may succeed, and keeps
    # 500 for real faults (PostgREST: 500)
    "57014": 504,
    # difference 2: the server shutting down or refusing connections is unavailability (PostgREST: 500)
    "57P01": 503,
    "57P02": 503,
    "57P03": 503,
    # difference 3: serialization failures and deadlocks are retried once by the gateway; when the retry
    # fails too the conflict is transient, so 503 with Retry-After (PostgREST: 500)
    "40001": 503,
    "40P01": 503,
}
_CLASSES: dict[str, int] = {
    "08": 503,  # connection exception
    "09": 500,  # triggered action exception
    "0L": 403,  # invalid grantor
    "0P": 403,  # invalid role specification
    "25": 500,  # invalid transaction state
    "28": 403,  # invalid authorization specification
    "2D": 500,  # invalid transaction termination
    "38": 500,  # external routine exception
    "39": 500,  # external routine invocation exception
    "3B": 500,  # savepoint exception
    "40": 500,  # transaction rollback
    "53": 503,  # insufficient resources
    "54": 500,  # program limit exceeded
    "55": 500,  # object not in prerequisite state
    "57": 500,  # operator intervention
    "58": 500,  # system error
    "F0": 500,  # configuration file error
    "HV": 500,  # foreign data wrapper error
    "P0": 500,  # PL/pgSQL error
    "XX": 500,  # internal error
}
RETRYABLE = frozenset({"40001", "40P01"})


def http_status(sqlstate: str, *, authenticated: bool) -> int:
    """The HTTP status of a database error, PostgREST's way (see the table above)."""
    if sqlstate.startswith("PT") and len(sqlstate) == 5 and sqlstate[2:].isdigit():
        custom = int(sqlstate[2:])
        if 100 <= custom <= 599:
            return custom
    if sqlstate == "42501":
        # insufficient privilege: ask an anonymous caller to sign in; a signed-in one is forbidden
        return 403 if authenticated else 401
    if sqlstate in _EXACT:
        return _EXACT[sqlstate]
    return _CLASSES.get(sqlstate[:2], 400)


def parse_details(detail: str | None) -> Any:
    """DETAIL as the client should see it: a JSON object when the database put one there, else text."""
    if not detail:
        return None
    text = detail.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return detail
        if isinstance(value, dict):
            return value
    return detail


class ApiError(Exception):
    """An error response: status, PostgREST body and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details, "hint": self.hint}

    def response(self, *, head: bool = False) -> Response:
        return error_response(self.status, self.body(), self.headers, head=head)

    @classmethod
    def from_database(cls, exc: psycopg.Error, *, authenticated: bool) -> ApiError:
        """The error response for an error the database raised."""
        diag = exc.diag
        if exc.sqlstate is None and isinstance(exc, psycopg.DataError):
            # refused by the driver before it reached the server: a NUL character, a value out of range
            return cls(400, "22P05", str(exc).strip(), details={"code": "invalid_input"})
        sqlstate = exc.sqlstate or "XX000"
        status = http_status(sqlstate, authenticated=authenticated)
        headers: dict[str, str] = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if status == 503:
            headers["Retry-After"] = "1"
        if status >= 500 and not sqlstate.startswith("PT"):
            # the database's text for its own faults names internals (relations, settings, files): the
            # code is enough for the client, the log has the rest
            return cls(
                status,
                sqlstate,
                _GENERIC_5XX.get(status, "The database could not complete the request."),
                headers=headers,
            )
        return cls(
            status,
            sqlstate,
            diag.message_primary or str(exc).strip(),
            details=parse_details(diag.message_detail),
            hint=diag.message_hint,
            headers=headers,
        )


_GENERIC_5XX = {
    503: "The database is unavailable or overloaded; retry shortly.",
    504: "The request took longer than its statement timeout allows.",
}


def error_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None, *, head: bool = False
) -> Response:
    content = b"" if head else json.dumps(body, separators=(",", ":")).encode()
    response = Response(
        content, status_code=status, media_type="application/json", headers=dict(headers or {})
    )
    if head:
        response.headers["content-length"] = str(len(json.dumps(body, separators=(",", ":")).encode()))
    return response


# -- the gateway's own errors ----------------------------------------------------------------------


def bad_request(message: str, code: str, **fields: Any) -> ApiError:
    """400 PGRST100 with details {code, ...fields}: a request the gateway cannot turn into a query."""
    return ApiError(400, "PGRST100", message, details={"code": code, **fields})


def unknown_argument(function: str, name: str) -> ApiError:
    return ApiError(
        400,
        "PGRST100",
        f"{function} has no argument named {name!r}.",
        details={"code": "unknown_argument", "field": name},
        hint="Send only the arguments listed for this endpoint in /openapi.json.",
    )


def missing_argument(function: str, name: str) -> ApiError:
    return ApiError(
        400,
        "PGRST100",
        f"{function} needs the argument {name!r}.",
        details={"code": "missing_argument", "field": name},
    )


def invalid_json(reason: str) -> ApiError:
    return ApiError(
        400, "PGRST102", f"The request body is not valid JSON: {reason}", details={"code": "invalid_json"}
    )


def not_found(path: str) -> ApiError:
    return ApiError(
        404,
        "PGRST125",
        f"No endpoint at {path}.",
        details={"code": "not_found", "resource": "route"},
        hint="The endpoints are listed in /openapi.json and /docs.",
    )


def unauthorized(message: str, code: str = "invalid_token") -> ApiError:
    return ApiError(
        401,
        "PGRST301",
        message,
        details={"code": code},
        headers={"WWW-Authenticate": f'Bearer error="{code}"' if code == "invalid_token" else "Bearer"},
    )


def unavailable(message: str, *, code: str = "CC503", retry_after: int = 1) -> ApiError:
    return ApiError(
        503, code, message, details={"code": "unavailable"}, headers={"Retry-After": str(retry_after)}
    )


def database_failure(exc: psycopg.Error, *, authenticated: bool) -> ApiError:
    """The one mapping of a failure in the database or on the way to it, for every path (requests, auth,
    payments): no free pooled connection, or a connection that broke, is 503 (a retry shortly may
    succeed); an error the database raised maps by its SQLSTATE (`ApiError.from_database`)."""
    if isinstance(exc, PoolTimeout):
        return unavailable("No database connection is free; retry shortly.")
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return unavailable("The database is unreachable; retry shortly.")
    return ApiError.from_database(exc, authenticated=authenticated)


def invalid_input(field: str, problem: str, **extra: Any) -> ApiError:
    """422 for a field of a request body that breaks a rule (`field problem.`, the rule in details)."""
    return ApiError(
        422,
        "PT422",
        f"{field} {problem}.",
        details={"code": "invalid_input", "field": field, **extra},
    )


def internal(request_id: str) -> ApiError:
    return ApiError(
        500,
        "CC500",
        "Internal error.",
        details={"code": "internal_error", "request_id": request_id},
        hint="The request id identifies the error in the gateway's log.",
    )
