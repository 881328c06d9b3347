"""`mailmux send --smtp`: one message over SMTP submission, to try that path by hand.

It does what a service's SMTP client does, no more: builds the message with the
standard `email` package (Date and Message-ID included, as a mail client writes
them; Bcc only in the envelope), connects in clear, with STARTTLS or with
implicit TLS, AUTHs with the client key as the password, and sends. Traffic
class and deadline go in the `X-Mailmux-Class` and `X-Mailmux-Deadline`
headers, since SMTP has no JSON fields to carry them; mailmux strips them
before sending.

What the user sees is the server's own final reply (`250 2.0.0 Ok: queued as
<id>`, or the refusal with its code), because that reply is what an SMTP
client acts on: 2xx accepted, 4xx try again, 5xx give up.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import aiosmtplib

from mailmux.addresses import ascii_domain
from mailmux.config_values import split_listen
from mailmux.message import CLASS_HEADER, DEADLINE_HEADER

#: The only final reply to DATA that means "accepted" (aiosmtplib raises on any other).
ACCEPTED = 250
TIMEOUT = 60.0


class UsageError(ValueError):
    """The command line cannot make a message or a connection (exit code 2)."""


class Refused(Exception):
    """The server answered, and not with acceptance; or it could not be reached (exit code 1)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """What the command line asks to send; every field as the user typed it."""

    sender: str
    to: Sequence[str]
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    traffic_class: str | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Connection:
    """Where to connect and how: `tls` is "none", "starttls" or "implicit"."""

    host: str
    port: int
    tls: str = "none"
    user: str = ""  # the AUTH user name: a client's name, or anything with an `api_keys` key
    key: str | None = None  # AUTH (with the key as the password) only when there is one
    cafile: str | None = None

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Sent:
    """The accepted message: the server's final reply, and recipients it refused at RCPT."""

    reply: str
    refused: dict[str, str]


def parse_target(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets), as `listen` addresses are written."""
    try:
        return split_listen(value)
    except ValueError as err:
        raise UsageError(f"--smtp: {err}") from None


def build_message(draft: Draft) -> tuple[EmailMessage, str, list[str]]:
    """The RFC 5322 message, its envelope sender and its envelope recipients.

    The envelope comes from the same parse as the headers, so mailmux is told
    to deliver to exactly whom the headers name, plus Bcc (which is no header).
    """
    senders = _mailboxes("--from", [draft.sender])
    if len(senders) != 1:
        raise UsageError(f"--from: one address, got {draft.sender!r}")
    (sender,) = senders
    recipients = [
        a.addr_spec
        for option, values in (("--to", draft.to), ("--cc", draft.cc), ("--bcc", draft.bcc))
        for a in _mailboxes(option, values)
    ]
    message = EmailMessage(policy=SMTP)
    try:  # the policy refuses CR and LF in a header value: no header injection from here
        message["From"] = draft.sender
        for name, values in (("To", draft.to), ("Cc", draft.cc)):
            if values:
                message[name] = ", ".join(values)
        message["Subject"] = draft.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=ascii_domain(sender.addr_spec))
        if draft.traffic_class is not None:
            message[CLASS_HEADER] = draft.traffic_class
        if draft.deadline is not None:
            message[DEADLINE_HEADER] = f"{draft.deadline:g}"
    except ValueError as err:
        raise UsageError(str(err)) from None
    if draft.text is not None or draft.html is None:
        message.set_content(draft.text or "")
        if draft.html is not None:
            message.add_alternative(draft.html, subtype="html")
    else:
        message.set_content(draft.html, subtype="html")
    return message, sender.addr_spec, recipients


def _mailboxes(option: str, values: Sequence[str]) -> tuple[Address, ...]:
    """The addresses in `values` (each may list several), parsed as an address header
    would be; every one complete, or UsageError naming the value as given."""
    found: list[Address] = []
    for value in values:
        addresses: tuple[Address, ...] = SMTP.header_factory("To", value).addresses
        if not addresses or any(not a.username or not a.domain for a in addresses):
            raise UsageError(f"{option}: not an email address: {value!r}")
        found.extend(addresses)
    return tuple(found)


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """Verifying, as a service's client should; `cafile` trusts mailmux's own certificate."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as err:
        raise UsageError(f"--cafile: {err}") from None


async def send(draft: Draft, connection: Connection) -> Sent:
    """Build, connect, AUTH when a key is given, send; Refused for anything but acceptance."""
    message, sender, recipients = build_message(draft)
    context = tls_context(connection.cafile) if connection.tls != "none" else None
    smtp = aiosmtplib.SMTP(
        hostname=connection.host,
        port=connection.port,
        use_tls=connection.tls == "implicit",
        start_tls=connection.tls == "starttls",
        tls_context=context,
        timeout=TIMEOUT,
    )
    try:
        async with smtp:
            if connection.key is not None:
                await smtp.login(connection.user, connection.key)
            refused, reply = await smtp.send_message(message, sender=sender, recipients=recipients)
    except aiosmtplib.SMTPRecipientsRefused as err:
        each = "; ".join(f"{r.recipient}: {_reply(r.code, r.message)}" for r in err.recipients)
        raise Refused(f"every recipient was refused: {each}") from None
    except aiosmtplib.SMTPAuthenticationError as err:
        raise Refused(f"AUTH refused: {_reply(err.code, err.message)}") from None
    except aiosmtplib.SMTPResponseException as err:
        again = " (temporary: try again later)" if 400 <= err.code < 500 else ""
        raise Refused(f"not accepted: {_reply(err.code, err.message)}{again}") from None
    except aiosmtplib.SMTPServerDisconnected as err:
        raise Refused(f"{connection.where} closed the session: {_one_line(err)}") from None
    except OSError as err:  # refused or timed-out connection, TLS handshake, certificate
        raise Refused(f"cannot reach mailmux at {connection.where}: {_one_line(err)}") from None
    except aiosmtplib.SMTPException as err:  # STARTTLS or AUTH not offered, disconnected
        raise Refused(f"{connection.where}: {_one_line(err)}") from None
    return Sent(_reply(ACCEPTED, reply), {r: _reply(a.code, a.message) for r, a in refused.items()})


def _reply(code: int, text: str) -> str:
    """A reply as the server sent it, its lines joined into one."""
    return f"{code} {' '.join(text.split())}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
