"""A local SMTP relay on aiosmtpd: stores what it accepts, misbehaves on request.

The SMTP counterpart of `Emulator`, with the same public face — `start()`,
`stop()`, `port`, `messages` (as `StoredMessage`s, so listings have the same
JSON), `accepted_total`, `set_faults(Faults)`, `set_down()`, `faults_changed()`
— and the same control routes (`/_emulator/messages`, `/_emulator/faults`),
served over HTTP on `control_port` because the main port speaks SMTP.
`sessions` counts SMTP connections, so tests can see connection reuse.

A stored message's body is a JSON document: `mail_from`, `rcpt_to`,
`mail_options`, `subject`, `headers` (`[name, decoded value]` pairs, in order)
and `raw_mime` (base64, as mailmux's spool payload keeps it). Its `headers` are
the session's: `session` (its number), `helo`, `tls` (`none`, `starttls` or
`implicit`) and `login` (the AUTH user, "" without AUTH).

Faults hit the final reply to DATA, after the content was read — where a
relay's trouble is hardest for a client: `latency_ms` delays that reply, `hang`
never sends it (until faults change), `reset` drops the connection with a TCP
reset instead, and `down` closes the listening socket and every open session.
`status` is HTTP-like, shared with the HTTP emulators, and means the same kind
of trouble here — the ESP's fault (5xx) is temporary, the message's (4xx) is
permanent:

======  =====================================================================
status  reply to DATA
======  =====================================================================
400     554 5.6.0 Message content rejected
401     550 5.7.1 Sender not authorized   (policy: the vendor's configuration)
403     550 5.7.1 Sender not authorized
404     550 5.1.1 Mailbox unavailable
413     552 5.3.4 Message size exceeds fixed maximum message size
429     454 4.7.0 Throttling failure: Maximum sending rate exceeded
4xx     554 5.0.0 Message rejected (injected status N)
5xx     451 4.3.0 Temporary failure, try again later (injected status N)
======  =====================================================================

`retry_after` has no SMTP counterpart and is ignored. Recipients decide their
own fate by the start of their local part, whatever the faults:
`reject-…` gets `550 5.1.1` (no such user), `defer-…` gets `451 4.2.0`
(try later), `deny-…` gets `554 5.7.1` (relay access denied).

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
import base64
import contextlib
import dataclasses
import hmac
import itertools
import random
import secrets
import signal
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Sequence
from email import policy
from email.errors import MessageError
from email.parser import BytesHeaderParser
from typing import Any, NoReturn, cast

import orjson
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailmux.emulator.faults import FaultError, Faults
from mailmux.emulator.server import (
    MAX_BODY_BYTES,
    MAX_MESSAGES,
    StoredMessage,
    _listen,
    _loop_factory,
    _woken,
)

HOSTNAME = "mailmux-emulator"
#: Per-recipient rules: a local part starting with the prefix gets the reply.
RECIPIENT_RULES = (
    ("reject-", "550 5.1.1 <{}>: Recipient address rejected: User unknown"),
    ("defer-", "451 4.2.0 <{}>: Recipient address deferred, try again later"),
    ("deny-", "554 5.7.1 <{}>: Relay access denied"),
)
_STATUS_REPLIES = {
    400: "554 5.6.0 Message content rejected",
    401: "550 5.7.1 Sender not authorized",
    403: "550 5.7.1 Sender not authorized",
    404: "550 5.1.1 Mailbox unavailable",
    413: "552 5.3.4 Message size exceeds fixed maximum message size",
    429: "454 4.7.0 Throttling failure: Maximum sending rate exceeded",
}
_JSON = "application/json"
#: How long stop() waits for sessions to wind down after dropping them.
_SHUTDOWN_TIMEOUT = 1.0
_HEADER_ERRORS = (ValueError, LookupError, IndexError, AttributeError, TypeError, MessageError)


def reply_for_status(status: int) -> str:
    """The SMTP reply an injected HTTP-like `status` becomes (see the module's table)."""
    if status >= 500:
        return f"451 4.3.0 Temporary failure, try again later (injected status {status})"
    return _STATUS_REPLIES.get(status, f"554 5.0.0 Message rejected (injected status {status})")


class SmtpEmulator:
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
        if max_messages < 1:
            raise ValueError(f"max_messages must be ≥ 1, got {max_messages}")
        self.host = host
        self.port = port
        self.control_port = control_port
        self.auth = auth
        self.implicit_tls = implicit_tls
        self._excluded_mechanisms = [
            m for m in ("PLAIN", "LOGIN") if m not in {a.upper() for a in auth_mechanisms}
        ]
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._rng = rng or random.Random()
        self._handler = _Handler(self)
        self._messages: deque[StoredMessage] = deque(maxlen=max_messages)
        self._accepted_total = 0
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3).upper()
        self._sessions = 0
        self._open: set[_Connection] = set()
        self._faults = Faults()
        self._changed = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._started = False
        self._stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._rebinding: asyncio.Task[None] | None = None
        self._closed: list[asyncio.AbstractServer] = []
        self._control: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; afterwards `port` (and `control_port`) are the real ports."""
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = await self._serve(sock)
        if self.control_port is not None:
            app = web.Application()
            app.router.add_get("/_emulator/messages", self._list_messages)
            app.router.add_delete("/_emulator/messages", self._clear_messages)
            app.router.add_get("/_emulator/faults", self._get_faults)
            app.router.add_post("/_emulator/faults", self._post_faults)
            self._control = web.AppRunner(app, access_log=None)
            await self._control.setup()
            control_sock = _listen(self.host, self.control_port)
            self.control_port = control_sock.getsockname()[1]
            await web.SockSite(self._control, control_sock).start()
        self._started = True
        if self._faults.down:
            self._apply_down(True)

    async def stop(self) -> None:
        """Stop listening, end hung replies, drop every session."""
        self._stopping = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._changed.set()  # hung and delayed replies wake up and abort
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

    def _new_session(self) -> _Connection:
        self._sessions += 1
        return _Connection(
            self,
            self._sessions,
            self._handler,
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
    def messages(self) -> list[StoredMessage]:
        """The accepted messages still stored, oldest first."""
        return list(self._messages)

    @property
    def accepted_total(self) -> int:
        """Every message accepted since start, including those dropped from the store."""
        return self._accepted_total

    @property
    def sessions(self) -> int:
        """SMTP connections accepted since start."""
        return self._sessions

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; call from the emulator's loop. OSError if the port is taken."""
        if self._started and not self._stopping:
            self._apply_down(faults.down)
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
        """Refuse connections (and drop open sessions), or listen again on the same port."""
        self.set_faults(dataclasses.replace(self._faults, down=down))

    async def faults_changed(self) -> Faults:
        """Wait for the next change of faults (a POST, a call, or `for_ms` running out)."""
        await self._changed.wait()
        return self._faults

    def _expire(self, faults: Faults) -> None:
        if self._faults is faults and not self._stopping:
            self.set_faults(Faults())

    def _apply_down(self, down: bool) -> None:
        if down:
            if self._server is not None:
                self._server.close()
                self._closed.append(self._server)
                self._server = None
            for connection in list(self._open):
                connection.drop()
        elif self._server is None and self._rebinding is None:
            sock = _listen(self.host, self.port)
            self._rebinding = asyncio.get_running_loop().create_task(self._listen_again(sock))

    async def _listen_again(self, sock: socket.socket) -> None:
        try:
            server = await self._serve(sock)
        finally:
            self._rebinding = None
        if self._faults.down or self._stopping:  # went down again while binding
            server.close()
            self._closed.append(server)
        else:
            self._server = server

    # -- what the SMTP handler asks ----------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (part.encode() for part in self.auth)
        ok = hmac.compare_digest(data.login, user) & hmac.compare_digest(data.password, password)
        return AuthResult(success=ok, handled=False, auth_data=user.decode() if ok else None)

    async def _injected_reply(self, connection: _Connection) -> str | None:
        """Apply the per-message faults at the end of DATA; None means "accept normally"."""
        while True:
            faults, changed = self._faults, self._changed
            if self._stopping:
                await connection.reset_and_wait()
            if not faults.per_request or (faults.rate < 1.0 and self._rng.random() >= faults.rate):
                return None
            if faults.latency_ms > 0 and await _woken(changed, faults.latency_ms / 1000):
                continue  # faults changed during the delay: decide again
            if faults.hang:
                await changed.wait()
                continue
            if faults.reset:
                await connection.reset_and_wait()
            if faults.status is not None:
                return reply_for_status(faults.status)
            return None

    def _store(self, connection: _Connection, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        headers = _headers(content)
        subject = next((v for n, v in headers if n.lower() == "subject"), None)
        body = {
            "mail_from": envelope.mail_from,
            "rcpt_to": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "subject": subject,
            "headers": headers,
            "raw_mime": base64.b64encode(content).decode("ascii"),
        }
        smtp = connection.session
        ssl_info = smtp.ssl if smtp is not None else None
        tls = "implicit" if self.implicit_tls else "starttls" if ssl_info is not None else "none"
        login = smtp.auth_data if smtp is not None and smtp.authenticated else None
        message_id = f"{self._id_prefix}{next(self._ids):07X}"
        stored = StoredMessage(
            message_id,
            time.time(),
            {
                "session": str(connection.number),
                "helo": (smtp.host_name if smtp is not None else None) or "",
                "tls": tls,
                "login": login if isinstance(login, str) else "",
            },
            orjson.dumps(body),
        )
        self._messages.append(stored)
        self._accepted_total += 1
        return message_id

    # -- control routes ----------------------------------------------------

    async def _list_messages(self, request: web.Request) -> web.Response:
        body = orjson.dumps([message.to_json() for message in self._messages])
        headers = {
            "X-Emulator-Accepted-Total": str(self._accepted_total),
            "X-Emulator-Sessions": str(self._sessions),
        }
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
        try:
            self.set_faults(faults)
        except OSError as err:
            return _json(409, {"error": f"cannot listen on port {self.port} again: {err}"})
        return _json(200, faults.to_json())


class _Connection(SMTP):
    """One SMTP connection; the emulator counts, lists and can drop it."""

    def __init__(self, emulator: SmtpEmulator, number: int, handler: _Handler, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.emulator = emulator
        self.number = number

    @property
    def handler_task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # again after STARTTLS, with the TLS transport
        self.emulator._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.emulator._open.discard(self)
        super().connection_lost(error)

    def reset(self) -> None:
        """Drop the connection with a TCP reset, as a crashed relay would."""
        transport = self.transport
        if transport is None or transport.is_closing():  # already on its way out
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # uvloop's transports are not asyncio.Transport subclasses, but all can abort().
        cast(asyncio.Transport, transport).abort()

    def drop(self) -> None:
        """Reset, and end the session's task even if its connection never reports the loss
        (a client that gave up during the STARTTLS handshake leaves it waiting for input)."""
        self.reset()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    async def reset_and_wait(self) -> NoReturn:
        """Reset, then wait to be cancelled: connection_lost ends the session's task."""
        self.reset()
        while True:
            await asyncio.Event().wait()


class _Handler:
    """aiosmtpd's hooks (every `handle_*` attribute is one, so nothing else lives here)."""

    def __init__(self, emulator: SmtpEmulator) -> None:
        self._emulator = emulator

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self._emulator.auth is None:
            return [line for line in lines if not line.startswith("250-AUTH")]
        return lines

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._emulator.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.rpartition("@")[0].lower()
        for prefix, reply in RECIPIENT_RULES:
            if local.startswith(prefix):
                return reply.format(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if not isinstance(server, _Connection):
            raise TypeError("the emulator's handler serves its own sessions only")
        if self._emulator.faults.per_request:
            injected = await self._emulator._injected_reply(server)
            if injected is not None:
                return injected
        return f"250 2.0.0 Ok: queued as {self._emulator._store(server, envelope)}"


def _headers(content: bytes) -> list[tuple[str, str]]:
    """The header fields in order, decoded (RFC 2047, raw UTF-8); a field that does not
    parse keeps its raw text."""
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(content)
    fields: list[tuple[str, str]] = []
    for name, raw in parsed.raw_items():
        try:
            value = str(policy.default.header_fetch_parse(name, raw))
        except _HEADER_ERRORS:
            value = str(raw)
        fields.append((name, _printable(value)))
    return fields


def _printable(text: str) -> str:
    """Undo the parser's surrogate escapes of raw UTF-8 bytes (JSON cannot hold them)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _json(status: int, data: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)


def run_smtp_emulator(host: str, port: int, control_port: int | None) -> None:
    """Serve until SIGINT or SIGTERM (`mailmux emulate --shape smtp`); prints where it
    listens. The control API is always served, on an ephemeral port unless given."""
    emulator = SmtpEmulator(host, port, control_port=0 if control_port is None else control_port)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(emulator))


async def _serve_until_signalled(emulator: SmtpEmulator) -> None:
    await emulator.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    host = f"[{emulator.host}]" if ":" in emulator.host else emulator.host
    print(
        f"mailmux emulator: smtp listening on smtp://{host}:{emulator.port}, "
        f"control on http://{host}:{emulator.control_port}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await emulator.stop()
