"""JSON logs: one object per line on stderr; the access log has one line per request."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = "commercecore.access"
_access_logger = logging.getLogger(ACCESS_LOGGER)
# attributes every LogRecord has; anything else was passed in `extra` and goes into the JSON object
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def timestamp(self, created: float) -> str:
        """`2026-11-24T15:18:46.779+00:00`, as datetime's isoformat(timespec="milliseconds") in UTC, with
        the date and time of the current second formatted once."""
        second = int(created)
        micro = round((created - second) * 1_000_000)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{micro // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[:1] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One line per record. Records logged on a running event loop (the access log: one per request) are
    written together at the end of the loop's current iteration: one write for all the requests that
    finished in it, not one per request; warnings and errors, and records from other threads, go out at
    once (after the lines waiting, in order)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record)
            loop = _running_loop() if record.levelno < logging.WARNING else None
            if loop is None:
                self._pending.append(line)
                self._write_pending()
                return
            self._pending.append(line)
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush_soon)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def emit_line(self, line: str) -> None:
        """A line already formatted, at INFO (the access log's fast path; see access())."""
        with self.lock:  # type: ignore[union-attr]
            try:
                loop = _running_loop()
                self._pending.append(line)
                if loop is None:
                    self._write_pending()
                elif not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self._flush_soon)
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": line}))

    def _flush_soon(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                self._write_pending()
            else:
                super().flush()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the `commercecore` loggers (idempotent)."""
    logger = logging.getLogger("commercecore")
    if any(getattr(h, "_commercecore", False) for h in logger.handlers):
        return
    handler = LineHandler(sys.stderr)
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
    logger = _access_logger
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = {
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
    }
    handler = _only_line_handler(logger)
    if handler is not None:
        # nobody else listens: the line JsonFormatter would write for the record, without the record
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)
        entry: dict[str, Any] = {
            "ts": formatter.timestamp(time.time()),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "message": f"{method} {route} {status}",
            **fields,
        }
        handler.emit_line(json.dumps(entry, default=str, separators=(",", ":")))
        return
    # makeRecord + handle is what Logger.info does, less the stack walk that finds the caller's line
    record = logger.makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %s", (method, route, status), None, extra=fields
    )
    logger.handle(record)


def _only_line_handler(logger: logging.Logger) -> LineHandler | None:
    """The LineHandler of `configure` when it is the only one a record of `logger` at INFO would reach
    (no handler or filter of its own, none on the way up to `commercecore`), else None."""
    if logger.handlers or logger.filters or logger.disabled or not logger.propagate:
        return None
    parent = logger.parent
    if parent is None or parent.name != "commercecore" or parent.filters or parent.disabled:
        return None
    if parent.propagate or len(parent.handlers) != 1:
        return None
    handler = parent.handlers[0]
    if (
        not isinstance(handler, LineHandler)
        or handler.filters
        or handler.level > logging.INFO
        or not isinstance(handler.formatter, JsonFormatter)
    ):
        return None
    return handler
