"""The HTTP server's connections: bounded in time and number, quiet in the log, JSON on error.

aiohttp runs one `RequestHandler` per connection; `BoundedRequestHandler`
is mailmux's subclass (`mailmux.ingress.listener` builds one per accepted
connection, around the runner's `web.Server`, which still dispatches to the
application and tracks connections for a graceful stop). What it adds:

- **Header deadline.** A connection whose request headers have not all
  arrived `header_timeout` seconds after it opened, or after the first byte
  of a later request on it, is closed. Between requests a keep-alive
  connection is idle, not late: aiohttp's keep-alive timer closes it after
  `keepalive_timeout` (`limits.idle_timeout`), which should outlast the idle
  timeout of a proxy in front, so the proxy never sends a request on a
  connection mailmux is closing (nginx would answer that POST with a 502).
- **Body deadline.** A body still incomplete `body_timeout` seconds after its
  headers arrived closes the connection.
- **Connection cap.** Beyond `max_connections` open connections, a new one
  gets a 503 and is closed at once; the open ones are served as before.
- **Errors in mailmux's shape, quietly.** aiohttp answers a request it
  cannot parse itself, with a text body quoting the request's bytes, and
  logs the bytes at ERROR with a traceback — an API key included. Here the
  answer is `{"error": {"code", "message"}}` and the log gets one short line
  naming the peer and the problem in fixed words (`malformed.describe`),
  through a `ThrottledLog`, so no client can fill the log. aiohttp's own
  HTTP exceptions (404, 405, 413, ...) get the JSON shape on the way out.

Cost on the hot path: a length check after each read, a float assignment per
request and one timer per connection that re-arms itself rather than being
re-created (aiohttp's keep-alive timer works the same way); a body that does
not arrive with its headers adds one timer.

Beyond the documented constructor arguments and the overridden methods
(`connection_made`, `connection_lost`, `data_received`, `finish_response`,
`handle_error`, `log_exception`), one aiohttp internal is used: `_messages`,
the requests parsed and not yet handled, whose last entry carries the newest
request's body stream. tests/test_server.py exercises every path over real
sockets, so an aiohttp upgrade that changes these fails there.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from mailmux.ingress.errors import error_response, from_http_exception
from mailmux.ingress.malformed import describe
from mailmux.ingress.throttle import ThrottledLog


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one listener allows a connection; the first three come from `limits.*`."""

    header_timeout: float = 15.0
    body_timeout: float = 60.0
    max_connections: int = 4096
    # aiohttp's idle timer between requests on a keep-alive connection.
    keepalive_timeout: float = 75.0
    max_line_size: int = 8190  # request line
    max_field_size: int = 8190  # one header field, name and value


def _refusal() -> bytes:
    body = orjson.dumps(
        {
            "error": {
                "code": "too_many_connections",
                "message": "the server has too many open connections; try again shortly",
            }
        }
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_REFUSAL = _refusal()


class ConnectionCount:
    """Open connections of one listener, against its cap."""

    __slots__ = ("limit", "open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def enter(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


def _peer(transport: asyncio.BaseTransport) -> str:
    peername = transport.get_extra_info("peername")
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "unknown peer"


class BoundedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with deadlines, a cap and quiet JSON errors."""

    __slots__ = (
        "_admitted",
        "_between_requests",
        "_body_payload",
        "_body_timer",
        "_count",
        "_head_deadline",
        "_head_timer",
        "_limits",
        "_partial_head",
        "_peer",
        "_throttle",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: ServerLimits,
        count: ConnectionCount,
        throttle: ThrottledLog,
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=limits.keepalive_timeout,
            logger=throttle.logger,
            access_log=None,  # type: ignore[arg-type]  # aiohttp's way to switch it off
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_field_size,
        )
        self._limits = limits
        self._count = count
        self._throttle = throttle
        self._admitted = False
        self._peer = "unknown peer"
        self._head_deadline: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._partial_head = False
        self._between_requests = False  # idle after a response: the keep-alive timer's turn
        self._body_payload: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = _peer(transport)
        if not self._count.enter():
            self._throttle.log(
                logging.WARNING,
                "refused a connection from %s: %d connections open (limits.max_connections)",
                self._peer,
                self._count.limit,
            )
            # A cast, not isinstance: uvloop's transports do not derive from asyncio's.
            stream = cast(asyncio.Transport, transport)
            stream.write(_REFUSAL)
            stream.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._restart_head_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return  # refused: aiohttp never saw this connection
        self._admitted = False
        self._count.leave()
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body_payload = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:
            body = self._body_payload
            if body is not None and not body.is_eof():
                # The parser moved past a body that had not ended: it could not parse the
                # rest. aiohttp's C parser does not tell the body's reader, who would wait
                # for ever; this makes its read fail (a 400) and skips the lingering read.
                body.set_exception(RequestPayloadError("malformed request body"))
                body.feed_eof()
            # A request's headers are complete: its handler runs, the header clock rests.
            self._head_deadline = None
            self._partial_head = False
            self._between_requests = False
            payload = self._messages[-1][1]
            if not payload.is_eof():
                self._watch_body(payload)
        elif data and self._between_requests:  # the next request's first bytes
            self._between_requests = False
            self._partial_head = True
            self._restart_head_clock()
        elif data:
            self._partial_head = self._head_deadline is not None

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            resp = from_http_exception(resp, request)
        sent = await super().finish_response(request, resp, start_time)
        if not self._messages:  # idle until the next request's first byte
            self._between_requests = True
        return sent

    # ------------------------------------------------------------ deadlines

    def _restart_head_clock(self) -> None:
        if self.transport is None:
            return
        self._head_deadline = self._loop.time() + self._limits.header_timeout
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(self._head_deadline, self._head_timer_fired)

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.transport is None:
            return
        if self._loop.time() < deadline:  # the clock restarted since the timer was set
            self._head_timer = self._loop.call_at(deadline, self._head_timer_fired)
            return
        if self._partial_head:
            self._throttle.log(
                logging.INFO,
                "closed a connection from %s: request headers incomplete after %g s "
                "(limits.header_timeout)",
                self._peer,
                self._limits.header_timeout,
            )
        else:
            self._throttle.log(
                logging.DEBUG,
                "closed a connection from %s that sent nothing in %g s (limits.header_timeout)",
                self._peer,
                self._limits.header_timeout,
            )
        self.force_close()

    def _watch_body(self, payload: StreamReader) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_payload = payload
        self._body_timer = self._loop.call_later(self._limits.body_timeout, self._body_timer_fired)

    def _body_timer_fired(self) -> None:
        self._body_timer = None
        payload, self._body_payload = self._body_payload, None
        if payload is None or payload.is_eof() or self.transport is None:
            return
        self._throttle.log(
            logging.INFO,
            "closed a connection from %s: request body incomplete after %g s (limits.body_timeout)",
            self._peer,
            self._limits.body_timeout,
        )
        self.force_close()

    # ------------------------------------------------------------ errors

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer in JSON and log one short line; never the request's bytes.

        `message` is aiohttp's text for the client, which quotes the request:
        it is not used.
        """
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            what = describe(exc)
            self._throttle.log(logging.WARNING, "bad request from %s: %s", self._peer, what)
            resp = error_response(400, "bad_request", what)
        elif isinstance(exc, ConnectionError) or self.transport is None:
            # The client left, or a deadline closed the connection (and said so), while
            # a handler read the body: there is nobody to answer and nothing to log.
            resp = error_response(400, "bad_request", "connection closed during the request")
        elif status == 504:
            self._throttle.log(
                logging.ERROR,
                "%s %s from %s: the handler timed out",
                request.method,
                request.path,
                self._peer,
            )
            resp = error_response(504, "timeout", "the request took too long to handle")
        else:
            # A fault in mailmux: the traceback is worth having. The path has no query string.
            self._throttle.log(
                logging.ERROR,
                "%s %s from %s: unhandled error",
                request.method,
                request.path,
                self._peer,
                exc_info=exc,
            )
            resp = error_response(500, "internal_error", "internal server error")
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; the error cannot be sent")
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's other error lines: the exception's type, never its message."""
        exc = kw.get("exc_info")
        what = str(args[0]) if args else "error"
        if isinstance(exc, BaseException):
            what = f"{what} ({type(exc).__name__})"
        self._throttle.log(logging.ERROR, "connection from %s: %s", self._peer, what[:200])
