"""A local ESP: serves one shape's send API, stores what it accepts, misbehaves on request.

Used by integration tests and as the "fast ESP" of the benchmarks, so the
API handler does the least it can: no logging, no fault work unless a
per-request fault is set, the request body stored as received (the listing
encodes it later), and a bounded store — `MAX_MESSAGES` by default — so a
long benchmark cannot exhaust memory (the oldest messages drop out;
`accepted_total` keeps counting).

Control routes (`/_emulator/messages`, `/_emulator/faults`) are served on
the main port and, if given, on a separate control port that stays up while
the main port is `down`. Faults never apply to them.

Listening sockets are bound synchronously, outside aiohttp's sites, so that
`set_down(True)` refuses connections from the moment it returns and
`set_down(False)` accepts them (into the backlog) from the moment it returns,
on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import secrets
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received
from mailmux.emulator.faults import FaultError, Faults
from mailmux.emulator.shapes import SHAPES

#: Default cap on stored messages (≈ 80 MB of 8 KB requests).
MAX_MESSAGES = 10_000
#: Largest request body read: above every ESP's own limit (SES: 40 MB).
MAX_BODY_BYTES = 64 * 1024 * 1024
_BACKLOG = 1024
#: How long stop() lets a handler finish before aiohttp cancels it.
_SHUTDOWN_TIMEOUT = 1.0
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One accepted request; `id` is the vendor message id the client was given."""

    id: str
    received_at: float  # epoch seconds
    headers: Mapping[str, str]
    raw_body: bytes  # the request body as a JSON document

    @property
    def body(self) -> Any:
        """The request body, decoded (JSON: dicts, lists, strings, numbers)."""
        return orjson.loads(self.raw_body)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "received_at": datetime.fromtimestamp(self.received_at, UTC).isoformat(
                timespec="milliseconds"
            ),
            "headers": dict(self.headers),
            "body": orjson.Fragment(self.raw_body),
        }


class Emulator:
    """One ESP shape on a port, with runtime faults; start() and stop() inside one loop."""

    def __init__(
        self,
        shape: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        control_port: int | None = None,
        rng: random.Random | None = None,
        max_messages: int = MAX_MESSAGES,
    ) -> None:
        factory = SHAPES.get(shape)
        if factory is None:
            raise ValueError(f"unknown shape {shape!r}; known: {', '.join(sorted(SHAPES))}")
        if max_messages < 1:
            raise ValueError(f"max_messages must be ≥ 1, got {max_messages}")
        self.shape = shape
        self.host = host
        self.port = port
        self.control_port = control_port
        self._esp = factory()
        self._rng = rng or random.Random()
        self._messages: deque[StoredMessage] = deque(maxlen=max_messages)
        self._accepted_total = 0
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._faults = Faults()
        self._changed = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._stopping = False
        self._main: web.AppRunner | None = None
        self._control: web.AppRunner | None = None
        self._main_server: asyncio.AbstractServer | None = None
        self._control_server: asyncio.AbstractServer | None = None
        self._rebinding: asyncio.Task[None] | None = None
        self._closed: list[asyncio.AbstractServer] = []

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; afterwards `port` (and `control_port`) are the real ports."""
        loop = asyncio.get_running_loop()
        main_app = web.Application(client_max_size=MAX_BODY_BYTES)
        for method, path in self._esp.routes:
            main_app.router.add_route(method, path, self._api)
        self._add_control_routes(main_app)
        self._main = await _runner(main_app)
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._main_server = await loop.create_server(
            _protocols(self._main), sock=sock, backlog=_BACKLOG
        )
        if self.control_port is not None:
            control_app = web.Application()
            self._add_control_routes(control_app)
            self._control = await _runner(control_app)
            sock = _listen(self.host, self.control_port)
            self.control_port = sock.getsockname()[1]
            self._control_server = await loop.create_server(_protocols(self._control), sock=sock)
        if self._faults.down:
            self._apply_down(True)

    async def stop(self) -> None:
        """Stop listening, end hung requests, close every connection."""
        self._stopping = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._changed.set()  # hung and delayed requests wake up and abort
        if self._rebinding is not None:
            await self._rebinding
        for server in (self._main_server, self._control_server):
            if server is not None:
                server.close()
                self._closed.append(server)
        self._main_server = self._control_server = None
        for runner in (self._main, self._control):
            if runner is not None:
                await runner.cleanup()
        self._main = self._control = None
        for server in self._closed:
            await server.wait_closed()
        self._closed.clear()

    # -- state -------------------------------------------------------------

    @property
    def messages(self) -> list[StoredMessage]:
        """The accepted messages still stored, oldest first."""
        return list(self._messages)

    @property
    def accepted_total(self) -> int:
        """Every message accepted since start, including those dropped from the store."""
        return self._accepted_total

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; call from the emulator's loop. OSError if the port is taken."""
        self._replace_faults(faults, spare=None)

    def _replace_faults(self, faults: Faults, spare: web.RequestHandler | None) -> None:
        if self._main is not None and not self._stopping:
            self._apply_down(faults.down, spare)
        self._faults = faults
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if faults.for_ms is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                faults.for_ms / 1000, self._expire, faults
            )

    def set_down(self, down: bool) -> None:
        """Refuse connections on the main port (or listen again on the same port)."""
        self.set_faults(dataclasses.replace(self._faults, down=down))

    async def faults_changed(self) -> Faults:
        """Wait for the next change of faults (a POST, a call, or `for_ms` running out)."""
        await self._changed.wait()
        return self._faults

    def _expire(self, faults: Faults) -> None:
        if self._faults is faults and not self._stopping:
            self.set_faults(Faults())

    def _apply_down(self, down: bool, spare: web.RequestHandler | None = None) -> None:
        """Close or reopen the main listening socket.

        Going down also drops every open connection, as a crashed ESP would:
        otherwise pooled keep-alive connections would go on being served.
        In-flight requests die with them, except `spare`, the control request
        that asked for the change, which is answered before its connection closes.
        """
        runner = self._main
        if runner is None:
            return
        if down:
            if self._main_server is not None:
                self._main_server.close()
                self._closed.append(self._main_server)
                self._main_server = None
                for connection in _protocols(runner).connections:
                    if connection is spare:
                        connection.close()
                    else:
                        _hang_up(connection.transport)
                        connection.force_close()
        elif self._main_server is None and self._rebinding is None:
            sock = _listen(self.host, self.port)
            self._rebinding = asyncio.get_running_loop().create_task(self._serve(runner, sock))

    async def _serve(self, runner: web.AppRunner, sock: socket.socket) -> None:
        try:
            server = await asyncio.get_running_loop().create_server(
                _protocols(runner), sock=sock, backlog=_BACKLOG
            )
        finally:
            self._rebinding = None
        if self._faults.down or self._stopping:  # went down again while binding
            server.close()
            self._closed.append(server)
        else:
            self._main_server = server

    # -- the ESP API (hot path) --------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if self._faults.per_request:
            injected = await self._inject(request)
            if injected is not None:
                return injected
        received = await self._esp.receive(request)
        if not isinstance(received, Received):
            return received
        message_id = f"{self._id_prefix}{next(self._ids):07x}"
        self._messages.append(
            StoredMessage(message_id, time.time(), received.headers, received.body)
        )
        self._accepted_total += 1
        return self._esp.accepted(message_id)

    async def _inject(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the per-request faults; None means "answer normally"."""
        await request.read()  # like an ESP, take the whole request before misbehaving
        while True:
            faults, changed = self._faults, self._changed
            if self._stopping:
                return _abort(request)
            if not faults.per_request or (faults.rate < 1.0 and self._rng.random() >= faults.rate):
                return None
            if faults.latency_ms > 0 and await _woken(changed, faults.latency_ms / 1000):
                continue  # faults changed during the delay: decide again
            if faults.hang:
                await changed.wait()
                continue
            if faults.reset:
                return _abort(request)
            if faults.status is not None:
                return self._esp.fault(faults.status, faults.retry_after)
            return None

    # -- control routes ----------------------------------------------------

    def _add_control_routes(self, app: web.Application) -> None:
        app.router.add_get("/_emulator/messages", self._list_messages)
        app.router.add_delete("/_emulator/messages", self._clear_messages)
        app.router.add_get("/_emulator/faults", self._get_faults)
        app.router.add_post("/_emulator/faults", self._post_faults)

    async def _list_messages(self, request: web.Request) -> web.Response:
        body = orjson.dumps([message.to_json() for message in self._messages])
        headers = {"X-Emulator-Accepted-Total": str(self.accepted_total)}
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def _clear_messages(self, request: web.Request) -> web.Response:
        self._messages.clear()
        return web.Response(status=204)

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(200, self._faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            faults = Faults.from_json(orjson.loads(raw) if raw.strip() else {})
        except orjson.JSONDecodeError:
            return _json(400, {"error": "the body is not valid JSON"})
        except FaultError as err:
            return _json(400, {"error": str(err)})
        if faults.down and faults.for_ms is None and self.control_port is None:
            error = "down: nothing could bring the port back; add for_ms or use a control port"
            return _json(400, {"error": error})
        try:
            self._replace_faults(faults, spare=request.protocol)
        except OSError as err:
            return _json(409, {"error": f"cannot listen on port {self.port} again: {err}"})
        return _json(200, faults.to_json())


def run_emulator(shape: str, host: str, port: int, control_port: int | None) -> None:
    """Serve until SIGINT or SIGTERM (the `mailmux emulate` command); prints where it listens."""
    if shape == "smtp":  # an SMTP server rather than an HTTP shape
        from mailmux.emulator.smtp import run_smtp_emulator

        run_smtp_emulator(host, port, control_port)
        return
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(Emulator(shape, host, port, control_port=control_port)))


async def _serve_until_signalled(emulator: Emulator) -> None:
    await emulator.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    line = f"mailmux emulator: {emulator.shape} listening on {_url(emulator.host, emulator.port)}"
    if emulator.control_port is not None:
        line += f", control on {_url(emulator.host, emulator.control_port)}"
    print(line, flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await emulator.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not built for every platform; the default loop is fine
        return None
    return uvloop.new_event_loop


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _runner(app: web.Application) -> web.AppRunner:
    # handler_cancellation: a hung request ends when its client goes away.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    return runner


def _protocols(runner: web.AppRunner) -> web.Server:
    server = runner.server
    if server is None:
        raise RuntimeError("the emulator's runner is not set up")
    return server


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound now (SO_REUSEADDR, so the same port binds again at once)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.create_server(address, family=family, backlog=_BACKLOG)
    sock.setblocking(False)
    return sock


async def _woken(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to `timeout` seconds; True if `event` fired first."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def _hang_up(transport: asyncio.BaseTransport | None) -> None:
    """Send the FIN now rather than on the loop's next turn.

    A client then sees its pooled connection closed before any answer that
    follows (such as the control request's), instead of reusing it and losing
    a request. Shut down through a duplicate descriptor: uvloop's transport
    sockets do not offer shutdown().
    """
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    with (
        contextlib.suppress(OSError),
        socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RDWR)


def _abort(request: web.Request) -> web.Response:
    """Drop the connection with a TCP reset; the returned response is never sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)


def _json(status: int, data: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)
