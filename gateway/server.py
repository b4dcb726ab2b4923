"""uvicorn's HTTP protocol (httptools) with the request limits applied while a request arrives.

httptools has no limit of its own on the URL or the headers: uvicorn would join a 10 MB URL from its pieces
(copying it again with each one) and hand it to the application whole. Here the request is refused with
414 or 431 (the error shape, `Connection: close`) as soon as its URL or headers pass the limits, and the
connection is closed without reading the rest. `commercecore serve` runs with it (`--http` of uvicorn:
`gateway.server:BoundedHttpToolsProtocol`).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway import bounds, logs
from gateway.errors import ApiError
from gateway.http import request_id_from
from gateway.settings import RequestLimits

PROTOCOL = "gateway.server:BoundedHttpToolsProtocol"
# how long a refused request's connection still reads (and drops) what the client sends before it closes
LINGER_SECONDS = 2.0


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is over a limit."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses a URL or headers over the limits (RequestLimits from the environment,
    or `limits` of a subclass made by `bounded_protocol`)."""

    limits: ClassVar[RequestLimits | None] = None
    _env_limits: ClassVar[RequestLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = self._limits()
        self._head_limit = 2 * self.bounds.max_query_bytes + self.bounds.max_header_bytes + 1024
        self._reset()

    @classmethod
    def _limits(cls) -> RequestLimits:
        if cls.limits is not None:
            return cls.limits
        if BoundedHttpToolsProtocol._env_limits is None:
            BoundedHttpToolsProtocol._env_limits = RequestLimits.from_env()
        return BoundedHttpToolsProtocol._env_limits

    def _reset(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        # a callback's _Refused reaches super() as httptools' parser error: see send_400_response
        super().data_received(data)
        if self._in_head and not self._refused and self._head_bytes > self._head_limit:
            # the request line and headers are still arriving and are past any size they may have
            self._refuse(bounds.headers_too_large(self.bounds, self._header_count, self._head_bytes))

    def send_400_response(self, msg: str) -> None:
        # a callback that refused the request has answered it already (httptools reports its exception
        # as a parser error)
        if not self._refused:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reset()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        path, _, query = self.url.partition(b"?")
        refused = bounds.target_refusal(path, query, self.bounds)
        if refused is not None:
            self._refuse(refused)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self.bounds.max_headers or self._header_bytes > self.bounds.max_header_bytes:
            self._refuse(bounds.headers_too_large(self.bounds, self._header_count, self._header_bytes))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _refuse(self, error: ApiError) -> None:
        """Answers with the error and closes the connection; raises to stop the parser."""
        self._refused = True
        request_id = request_id_from(None)
        body = json.dumps(error.body(), separators=(",", ":")).encode()
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"x-request-id: " + request_id.encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(head))
        # a lingering close: the answer, then end of our side, and what the client still sends is read
        # and dropped for a moment before the connection closes; closing at once with its data unread
        # would reset the connection, and the client could lose the answer it has not read yet
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
        logs.access(
            request_id=request_id,
            method=self._method(),
            path=getattr(self, "url", b"")[:256].decode("latin-1"),
            route="refused",
            status=error.status,
            duration_ms=0.0,
            role=None,
            user_id=None,
            client=self.client[0] if self.client else "unknown",
        )
        raise _Refused()

    def _method(self) -> str:
        try:
            return bytes(self.parser.get_method()).decode("ascii", "replace")
        except Exception:  # the method is not parsed yet
            return "-"


def bounded_protocol(limits: RequestLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol with these limits (for a server in this process; `serve` reads them from the
    environment in each worker)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
