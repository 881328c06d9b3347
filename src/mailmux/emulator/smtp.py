"""A local SMTP relay on aiosmtpd: stores what it accepts, misbehaves on request.

The SMTP counterpart of `Emulator`, with the same public face — `start()`,
`stop()`, `port`, `messages` (as `StoredMessage`s, so listings have the same
JSON), `accepted_total`, `set_faults(Faults)`, `set_down()`, `faults_changed()`
— and the same control routes (`/_emulator/messages`, `/_emulator/faults`),
served over HTTP on `control_port` because the main port speaks SMTP.
`sessions` counts SMTP connections, so tests can see connection reuse. What a
session says, and what it stores, is in `smtp_session`.

Faults hit the final reply to DATA, after the content was read — where a
relay's trouble is hardest for a client: `latency_ms` delays that reply, `hang`
never sends it (until faults change), `reset` drops the connection with a TCP
reset instead, `status` turns it into an SMTP error (`reply_for_status`), and
`down` closes the listening socket and every open session. `retry_after` has
no SMTP counterpart and is ignored.

With `auth`, MAIL FROM before a successful AUTH (PLAIN or LOGIN, or the
`auth_mechanisms` given) is refused with `530 5.7.0`; wrong credentials get
`535 5.7.8`. Without `auth`, AUTH is not advertised. With a `tls_context`,
STARTTLS is offered and AUTH only after it (as relays do), unless
`implicit_tls`, where the listening socket speaks TLS from the first byte;
`require_starttls` refuses everything but EHLO, NOOP, STARTTLS and QUIT
before STARTTLS.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import random
import secrets
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailmux.emulator.control import MAX_MESSAGES, ControlledEmulator, add_control_routes
from mailmux.emulator.serving import MAX_BODY_BYTES, listen, run_until_signalled
from mailmux.emulator.smtp_session import Connection, Handler, received, reply_for_status

HOSTNAME = "mailmux-emulator"
#: How long stop() waits for sessions to wind down after dropping them.
_SHUTDOWN_TIMEOUT = 1.0


class SmtpEmulator(ControlledEmulator):
    """An SMTP relay on a port, with runtime faults; start() and stop() inside one loop."""

    shape = "smtp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        control_port: int | None = None,
        auth: tuple[str, str] | None = None,
        auth_mechanisms: Sequence[str] = ("PLAIN", "LOGIN"),
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        rng: random.Random | None = None,
        max_messages: int = MAX_MESSAGES,
    ) -> None:
        if (implicit_tls or require_starttls) and tls_context is None:
            raise ValueError("implicit_tls and require_starttls need a tls_context")
        if implicit_tls and require_starttls:
            raise ValueError("implicit_tls and require_starttls: choose one")
        unknown = sorted({m.upper() for m in auth_mechanisms} - {"PLAIN", "LOGIN"})
        if unknown or not auth_mechanisms:
            raise ValueError(f"auth_mechanisms: PLAIN and/or LOGIN, got {list(auth_mechanisms)}")
        super().__init__(port, control_port, rng, max_messages)
        self.host = host
        self.auth = auth
        self.implicit_tls = implicit_tls
        self._excluded_mechanisms = [
            m for m in ("PLAIN", "LOGIN") if m not in {a.upper() for a in auth_mechanisms}
        ]
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._handler = Handler(lambda: self.auth is not None, self._end_of_data)
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3).upper()
        self._sessions = 0
        self._open: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._rebinding: asyncio.Task[None] | None = None
        self._closed: list[asyncio.AbstractServer] = []
        self._control: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; afterwards `port` (and `control_port`) are the real ports."""
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = await self._serve(sock)
        if self.control_port is not None:
            app = web.Application()
            add_control_routes(app, self, listing_headers=self._listing_headers)
            self._control = web.AppRunner(app, access_log=None)
            await self._control.setup()
            control_sock = listen(self.host, self.control_port)
            self.control_port = control_sock.getsockname()[1]
            await web.SockSite(self._control, control_sock).start()
        self._fault_control.start()

    async def stop(self) -> None:
        """Stop listening, end hung replies, drop every session."""
        self._fault_control.stop()  # hung and delayed replies wake up and abort
        if self._rebinding is not None:
            await self._rebinding
        if self._server is not None:
            self._server.close()
            self._closed.append(self._server)
            self._server = None
        await self._drop_sessions()
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        for server in self._closed:
            await server.wait_closed()
        self._closed.clear()

    async def _serve(self, sock: socket.socket) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        tls = self._tls_context if self.implicit_tls else None
        return await loop.create_server(self._new_session, sock=sock, ssl=tls)

    def _new_session(self) -> Connection:
        self._sessions += 1
        return Connection(
            self._sessions,
            self._handler,
            self._open,
            data_size_limit=MAX_BODY_BYTES,
            enable_SMTPUTF8=True,
            hostname=HOSTNAME,
            ident="mailmux SMTP emulator",
            tls_context=None if self.implicit_tls else self._tls_context,
            require_starttls=self._require_starttls,
            auth_require_tls=self._tls_context is not None and not self.implicit_tls,
            auth_exclude_mechanism=self._excluded_mechanisms,
            authenticator=self._authenticate,
            loop=asyncio.get_running_loop(),
        )

    async def _drop_sessions(self) -> None:
        connections = list(self._open)
        tasks = [c.handler_task for c in connections if c.handler_task is not None]
        for connection in connections:
            connection.drop()
        if tasks:
            await asyncio.wait(tasks, timeout=_SHUTDOWN_TIMEOUT)

    # -- state -------------------------------------------------------------

    @property
    def sessions(self) -> int:
        """SMTP connections accepted since start."""
        return self._sessions

    def _listing_headers(self) -> dict[str, str]:
        return {"X-Emulator-Sessions": str(self._sessions)}

    def _apply_down(self, down: bool) -> None:
        if down:
            if self._server is not None:
                self._server.close()
                self._closed.append(self._server)
                self._server = None
            for connection in list(self._open):
                connection.drop()
        elif self._server is None and self._rebinding is None:
            sock = listen(self.host, self.port)
            self._rebinding = asyncio.get_running_loop().create_task(self._listen_again(sock))

    async def _listen_again(self, sock: socket.socket) -> None:
        try:
            server = await self._serve(sock)
        finally:
            self._rebinding = None
        if self.faults.down or self._fault_control.stopping:  # went down again while binding
            server.close()
            self._closed.append(server)
        else:
            self._server = server

    # -- what the SMTP session asks ----------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (part.encode() for part in self.auth)
        ok = hmac.compare_digest(data.login, user) & hmac.compare_digest(data.password, password)
        return AuthResult(success=ok, handled=False, auth_data=user.decode() if ok else None)

    async def _end_of_data(self, connection: Connection, envelope: Envelope) -> str:
        """The final reply to DATA: an injected fault, or the message stored and queued
        (with `accept`, stored first and then the fault)."""
        faults = self._fault_control.faults
        if faults.accept:
            message_id = self._keep(connection, envelope)
        if faults.per_request:
            hit = await self._fault_control.strike()
            if hit is not None:
                if hit.status is None:  # reset
                    await connection.reset_and_wait()
                return reply_for_status(hit.status)
        if not faults.accept:
            message_id = self._keep(connection, envelope)
        return f"250 2.0.0 Ok: queued as {message_id}"

    def _keep(self, connection: Connection, envelope: Envelope) -> str:
        message = received(connection, envelope, implicit_tls=self.implicit_tls)
        message_id = f"{self._id_prefix}{next(self._ids):07X}"
        self._store.add(message_id, message)
        return message_id


def run_smtp_emulator(host: str, port: int, control_port: int | None) -> None:
    """Serve until SIGINT or SIGTERM (`mailmux emulate --shape smtp`); prints where it
    listens. The control API is always served, on an ephemeral port unless given."""
    emulator = SmtpEmulator(host, port, control_port=0 if control_port is None else control_port)
    run_until_signalled(emulator, lambda: _banner(emulator))


def _banner(emulator: SmtpEmulator) -> str:
    host = f"[{emulator.host}]" if ":" in emulator.host else emulator.host
    return (
        f"mailmux emulator: smtp listening on smtp://{host}:{emulator.port}, "
        f"control on http://{host}:{emulator.control_port}"
    )
