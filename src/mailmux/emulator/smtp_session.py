"""One session of the SMTP emulator: aiosmtpd's hooks, the replies, and what is stored.

A stored message's body is a JSON document: `mail_from`, `rcpt_to`,
`mail_options`, `subject`, `headers` (`[name, decoded value]` pairs, in order)
and `raw_mime` (base64, as mailmux's spool payload keeps it). Its `headers` are
the session's: `session` (its number), `helo`, `tls` (`none`, `starttls` or
`implicit`) and `login` (the AUTH user, "" without AUTH).

An injected `status` is HTTP-like, shared with the HTTP emulators, and means the
same kind of trouble here — the ESP's fault (5xx) is temporary, the message's
(4xx) is permanent:

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

Recipients decide their own fate by the start of their local part, whatever
the faults: `reject-…` gets `550 5.1.1` (no such user), `defer-…` gets
`451 4.2.0` (try later), `deny-…` gets `554 5.7.1` (relay access denied).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from email import policy
from email.errors import MessageError
from email.parser import BytesHeaderParser
from typing import Any, NoReturn

import orjson
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmux.emulator.base import Received
from mailmux.emulator.serving import reset

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
_HEADER_ERRORS = (ValueError, LookupError, IndexError, AttributeError, TypeError, MessageError)

#: The emulator's answer to a complete DATA: the final reply.
EndOfData = Callable[["Connection", Envelope], Awaitable[str]]


def reply_for_status(status: int) -> str:
    """The SMTP reply an injected HTTP-like `status` becomes (see the module's table)."""
    if status >= 500:
        return f"451 4.3.0 Temporary failure, try again later (injected status {status})"
    return _STATUS_REPLIES.get(status, f"554 5.0.0 Message rejected (injected status {status})")


class Connection(SMTP):
    """One SMTP connection; the emulator counts, lists and can drop it."""

    def __init__(
        self, number: int, handler: Handler, open_sessions: set[Connection], **kwargs: Any
    ):
        """`open_sessions` is the emulator's set of live connections, kept up to date here."""
        super().__init__(handler, **kwargs)
        self.number = number
        self._open_sessions = open_sessions

    @property
    def handler_task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # again after STARTTLS, with the TLS transport
        self._open_sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._open_sessions.discard(self)
        super().connection_lost(error)

    def reset(self) -> None:
        """Drop the connection with a TCP reset, as a crashed relay would."""
        transport = self.transport
        if transport is None or transport.is_closing():  # already on its way out
            return
        reset(transport)

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


class Handler:
    """aiosmtpd's hooks (every `handle_*` attribute is one, so nothing else lives here)."""

    def __init__(self, auth_required: Callable[[], bool], end_of_data: EndOfData) -> None:
        """`auth_required()`: whether MAIL FROM needs a successful AUTH (and AUTH is
        advertised); `end_of_data` gives the final reply to DATA."""
        self._auth_required = auth_required
        self._end_of_data = end_of_data

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if not self._auth_required():
            return [line for line in lines if not line.startswith("250-AUTH")]
        return lines

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._auth_required() and not session.authenticated:
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
        if not isinstance(server, Connection):
            raise TypeError("the emulator's handler serves its own sessions only")
        return await self._end_of_data(server, envelope)


def received(connection: Connection, envelope: Envelope, *, implicit_tls: bool) -> Received:
    """What the emulator stores of a message, and of the session that brought it."""
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
    tls = "implicit" if implicit_tls else "starttls" if ssl_info is not None else "none"
    login = smtp.auth_data if smtp is not None and smtp.authenticated else None
    return Received(
        body=orjson.dumps(body),
        headers={
            "session": str(connection.number),
            "helo": (smtp.host_name if smtp is not None else None) or "",
            "tls": tls,
            "login": login if isinstance(login, str) else "",
        },
    )


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
