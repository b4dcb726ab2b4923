"""The one place that opens a request's context in the database: role, claims, request id, timeouts.

SET ROLE does not load a role's own settings (ALTER ROLE ... SET applies at login only), so the
per-role statement_timeout is read from the catalog once and applied per transaction, as PostgREST does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from psycopg import sql

# The roles a request may run as; app_payments is selected by the gateway itself, never by a JWT claim.
REQUEST_ROLES = frozenset({"app_readonly", "app_readwrite", "app_admin", "app_payments"})

# Role settings that make sense per transaction; anything else set on a role is left to login time.
PER_TRANSACTION_SETTINGS = frozenset(
    {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "work_mem"}
)

ROLE_SETTINGS_QUERY = """
select r.rolname, c.setting
from pg_catalog.pg_db_role_setting as s
join pg_catalog.pg_roles as r on r.oid = s.setrole
cross join lateral unnest(s.setconfig) as c (setting)
where s.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
order by s.setdatabase  -- database-specific settings come last and win
"""


def parse_role_settings(rows: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Rows of ROLE_SETTINGS_QUERY -> {role: {setting: value}} for the per-transaction settings."""
    settings: dict[str, dict[str, str]] = {}
    for role, setting in rows:
        name, _, value = setting.partition("=")
        if name in PER_TRANSACTION_SETTINGS:
            settings.setdefault(role, {})[name] = value
    return settings


def request_context(
    role: str,
    claims: Mapping[str, Any] | None,
    role_settings: Mapping[str, Mapping[str, str]],
    *,
    request_id: str = "",
    method: str = "",
    path: str = "",
) -> tuple[sql.Composed, list[str]]:
    """One statement that sets everything a request's transaction needs (values are parameters)."""
    if role not in REQUEST_ROLES:
        raise ValueError(f"{role!r} is not a request role")
    pairs: list[tuple[str, str]] = [
        ("role", role),
        ("request.jwt.claims", json.dumps(dict(claims or {}), separators=(",", ":"))),
        ("request.id", request_id),
        ("request.method", method),
        ("request.path", path),
    ]
    pairs.extend(sorted(role_settings.get(role, {}).items()))
    calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in pairs)
    params = [item for pair in pairs for item in pair]
    return sql.SQL("select {}").format(calls), params
