"""JSON logs: one object per line on stderr; the access log has one line per request."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = "commercecore.access"
# attributes every LogRecord has; anything else was passed in `extra` and goes into the JSON object
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the `commercecore` loggers (idempotent)."""
    logger = logging.getLogger("commercecore")
    if any(getattr(h, "_commercecore", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._commercecore = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def access(
    *,
    request_id: str,
    method: str,
    path: str,
    route: str,
    status: int,
    duration_ms: float,
    role: str | None,
    user_id: int | None,
    client: str,
    sqlstate: str | None = None,
) -> None:
    logging.getLogger(ACCESS_LOGGER).info(
        "%s %s %s",
        method,
        route,
        status,
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": round(duration_ms, 2),
            "role": role,
            "user_id": user_id,
            "client": client,
            "sqlstate": sqlstate,
        },
    )
