"""What one HTTP client may cost the service: header size and count, request body, the time to
send a request, idle keep-alive, connections at once.

uvicorn's httptools protocol has none of these but the keep-alive timeout: httptools buffers a
header line until it ends (10 connections sending 20 MiB of unterminated headers took the
service from 115 to 400 MB), and a connection that sends nothing, or a byte a minute, is kept
for ever. ``guarded_protocol(limits)`` is that protocol with the limits added; the service
passes it to ``uvicorn.Config(http=...)``. Each refusal is an HTTP answer (431, 413, 408, 503)
followed by closing the connection, and is counted in ``refused`` by reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HttpLimits", "guarded_protocol", "refused"]

log = logging.getLogger("aggregator.web.limits")

# Refusals since start, by reason (header-too-large, too-many-headers, body-too-large,
# request-timeout, too-many-connections), for diagnostics; each is also one warning in the log.
refused: Counter[str] = Counter()


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The HTTP server's limits (``AGGREGATOR_HTTP_*``; docs/operations.md)."""

    max_header_bytes: int = 16 * 1024  # request line and headers of one request
    max_headers: int = 100  # header fields in one request
    max_body_bytes: int = 64 * 1024  # every route is a GET: a body is never needed
    request_timeout: float = 10.0  # a request must arrive whole this long after it starts
    keep_alive_timeout: float = 5.0  # an idle kept-alive connection is closed after this
    max_connections: int = 1000  # connections open at once; more are answered 503 and closed


_REASONS = {
    431: b"Request Header Fields Too Large",
    413: b"Content Too Large",
    408: b"Request Timeout",
    503: b"Service Unavailable",
}


class _GuardedProtocol(HttpToolsProtocol):
    limits: HttpLimits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request: line, headers and body not yet complete
        self._headers_done = False
        self._head_bytes = 0  # bytes received since the request began, while in its head
        self._header_size = 0  # the request line and header fields as parsed
        self._header_count = 0
        self._body_bytes = 0
        self._problem: tuple[int, str] | None = None
        self._request_timer: asyncio.TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too-many-connections")
            return
        # A connection that never sends a whole request is closed after the request timeout.
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._request_timer is None:
                self._arm_request_timer()  # the next request on a kept-alive connection
        super().data_received(data)
        if (
            self._problem is None
            and not self._headers_done
            and self._head_bytes > self.limits.max_header_bytes
        ):
            # Headers still unterminated past the limit: httptools would buffer them all.
            self._problem = (431, "header-too-large")
        if self._problem is not None and not self.transport.is_closing():
            self._refuse(*self._problem)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        self._header_size = 0
        self._header_count = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_header_bytes:
            self._problem = self._problem or (431, "header-too-large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_size += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            self._problem = self._problem or (431, "too-many-headers")
            return
        super().on_header(name, value)
        if name.lower() == b"content-length":
            try:
                declared = int(value.strip())
            except ValueError:
                declared = 0
            if declared > self.limits.max_body_bytes:
                self._problem = self._problem or (413, "body-too-large")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._problem is None and len(self.url) + self._header_size > (
            self.limits.max_header_bytes
        ):
            self._problem = (431, "header-too-large")
        if self._problem is not None:
            return  # refused after this chunk: no request cycle is started
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._problem is not None or self.cycle is None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._problem = (413, "body-too-large")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._problem is not None or self.cycle is None:
            return
        self._in_head = False
        self._disarm_request_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # The next request starts: count its bytes afresh (keep-alive has its own timer).
        self._in_head = True
        self._headers_done = False
        self._head_bytes = 0
        super().on_response_complete()

    # -- refusing -------------------------------------------------------------------------

    def _arm_request_timer(self) -> None:
        self._disarm_request_timer()
        self._request_timer = self.loop.call_later(
            self.limits.request_timeout, self._request_timed_out
        )

    def _disarm_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "request-timeout")

    def _refuse(self, status: int, reason: str) -> None:
        refused[reason] += 1
        log.warning("HTTP request refused (%d %s) from %s", status, reason, self.client)
        self._disarm_request_timer()
        if self.cycle is not None and self.cycle.response_started:
            # The app answered already (a body still arriving after a 405, say): no second
            # answer on the connection, it is closed.
            self.cycle.disconnected = True
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's half-read request is abandoned
        body = reason.encode("ascii") + b"\n"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()


def guarded_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("GuardedHttpProtocol", (_GuardedProtocol,), {"limits": limits})
