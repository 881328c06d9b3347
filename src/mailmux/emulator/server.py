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
import itertools
import random
import secrets
import socket
import time

from aiohttp import web

from mailmux.emulator.base import Received
from mailmux.emulator.control import MAX_MESSAGES, ControlledEmulator, add_control_routes
from mailmux.emulator.faults import Faults
from mailmux.emulator.serving import (
    BACKLOG,
    MAX_BODY_BYTES,
    listen,
    reset,
    run_until_signalled,
)
from mailmux.emulator.shapes import SHAPES

#: How long stop() lets a handler finish before aiohttp cancels it.
_SHUTDOWN_TIMEOUT = 1.0


class Emulator(ControlledEmulator):
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
        super().__init__(port, control_port, rng, max_messages)
        self.shape = shape
        self.host = host
        self._esp = factory()
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
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
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._main_server = await loop.create_server(
            _protocols(self._main), sock=sock, backlog=BACKLOG
        )
        if self.control_port is not None:
            control_app = web.Application()
            self._add_control_routes(control_app)
            self._control = await _runner(control_app)
            sock = listen(self.host, self.control_port)
            self.control_port = sock.getsockname()[1]
            self._control_server = await loop.create_server(_protocols(self._control), sock=sock)
        self._fault_control.start()

    async def stop(self) -> None:
        """Stop listening, end hung requests, close every connection."""
        self._fault_control.stop()  # hung and delayed requests wake up and abort
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

    # -- control -----------------------------------------------------------

    def _add_control_routes(self, app: web.Application) -> None:
        add_control_routes(app, self, set_faults=self._set_faults_for)

    def _set_faults_for(self, faults: Faults, request: web.Request) -> None:
        """A control request's change: its own connection is answered before it closes."""
        spare = request.protocol
        self._fault_control.replace(faults, lambda down: self._apply_down(down, spare))

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
            sock = listen(self.host, self.port)
            self._rebinding = asyncio.get_running_loop().create_task(self._serve(runner, sock))

    async def _serve(self, runner: web.AppRunner, sock: socket.socket) -> None:
        try:
            server = await asyncio.get_running_loop().create_server(
                _protocols(runner), sock=sock, backlog=BACKLOG
            )
        finally:
            self._rebinding = None
        if self.faults.down or self._fault_control.stopping:  # went down again while binding
            server.close()
            self._closed.append(server)
        else:
            self._main_server = server

    # -- the ESP API (hot path) --------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        arrived_at = time.time()
        faults = self._fault_control.faults
        if faults.per_request and not faults.accept:
            injected = await self._inject(request)
            if injected is not None:
                return injected
        received = await self._esp.receive(request)
        if not isinstance(received, Received):
            return received
        message_id = f"{self._id_prefix}{next(self._ids):07x}"
        self._store.add(message_id, received, arrived_at)
        if faults.per_request and faults.accept:  # taken; now the answer goes wrong
            injected = await self._inject(request)
            if injected is not None:
                return injected
        return self._esp.accepted(message_id)

    async def _inject(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the per-request faults; None means "answer normally"."""
        await request.read()  # like an ESP, take the whole request before misbehaving
        hit = await self._fault_control.strike()
        if hit is None:
            return None
        if hit.status is None:  # reset
            return _abort(request)
        return self._esp.fault(hit.status, hit.retry_after)


def run_emulator(shape: str, host: str, port: int, control_port: int | None) -> None:
    """Serve until SIGINT or SIGTERM (the `mailmux emulate` command); prints where it listens."""
    if shape == "smtp":  # an SMTP server rather than an HTTP shape
        from mailmux.emulator.smtp import run_smtp_emulator

        run_smtp_emulator(host, port, control_port)
        return
    emulator = Emulator(shape, host, port, control_port=control_port)
    run_until_signalled(emulator, lambda: _banner(emulator))


def _banner(emulator: Emulator) -> str:
    line = f"mailmux emulator: {emulator.shape} listening on {_url(emulator.host, emulator.port)}"
    if emulator.control_port is not None:
        line += f", control on {_url(emulator.host, emulator.control_port)}"
    return line


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
    if request.transport is not None:
        reset(request.transport)
    return web.Response(status=500)
