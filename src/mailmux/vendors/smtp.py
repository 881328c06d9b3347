"""SMTP relay (`kind: smtp`): any SMTP server that relays for us — a smarthost, or an
ESP's SMTP interface — over aiosmtplib, with STARTTLS or implicit TLS and AUTH.

One attempt is one SMTP transaction of the envelope `smtp_mapping.build_envelope` makes;
`smtp_mapping` also says how every reply and failure is classified, and why. Here is
the I/O: the sessions, and the one boundary from aiosmtplib's, ssl's and asyncio's
exceptions to outcomes.

What the relay's session cannot carry is `UnsupportedFeature` after EHLO, with nothing
sent: 8-bit content without 8BITMIME, addresses or headers that need SMTPUTF8 without
it, and a message above the relay's SIZE limit. SMTP takes no idempotency key; the
Message-ID, derived from mailmux's message id, is what receivers deduplicate by.

Connections are pooled: up to `pool_size` connected, authenticated sessions, reused one
message at a time. No NOOP or RSET probe before reuse (it would cost a round trip per
message): a pooled session the relay ended is noticed when its MAIL FROM meets a closed
connection or a 421, and the message then goes out on a fresh connection, which is safe
because nothing of it was sent. A session that ended a transaction any other way than
with a DATA reply is closed rather than reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from mailmux.message import Message
from mailmux.vendors.base import AttemptResult, Outcome, UnsupportedFeature, Vendor
from mailmux.vendors.smtp_mapping import (
    AUTH,
    CONNECT,
    DATA,
    EHLO,
    MAIL,
    POOL,
    RCPT,
    STARTTLS,
    Envelope,
    Refusal,
    build_envelope,
    classify_reply,
    queue_id,
    recipients_outcome,
    refusals_reason,
    too_many_recipients,
)

TlsMode = Literal["none", "starttls", "implicit"]
TLS_MODES: tuple[TlsMode, ...] = ("none", "starttls", "implicit")
DEFAULT_POOL_SIZE = 4
#: How long close() waits for each pooled session's QUIT.
QUIT_TIMEOUT = 1.0


class SmtpVendor(Vendor):
    """An SMTP relay with a small pool of connected, authenticated sessions."""

    kind = "smtp"

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        tls: TlsMode = "starttls",
        connect_timeout: float = 5.0,
        pool_size: int = DEFAULT_POOL_SIZE,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        super().__init__(name)
        if tls not in TLS_MODES:
            raise ValueError(f"tls: must be one of {', '.join(TLS_MODES)}, got {tls!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size: must be ≥ 1, got {pool_size}")
        if password is not None and username is None:
            raise ValueError("password: given without a username")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        # Verified against the system's trust store unless the caller brings a context.
        self._tls_context = tls_context or (None if tls == "none" else ssl.create_default_context())
        self._local_hostname = local_hostname
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        try:
            envelope = build_envelope(message, message_id)
        except UnsupportedFeature as err:
            return AttemptResult(Outcome.UNSUPPORTED, reason=str(err))
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout), self._slots:
                try:
                    result = await self._deliver(envelope, progress)
                except BaseException:
                    progress.discard()
                    raise
                self._give_back(progress)
                return result
        except (aiosmtplib.SMTPException, OSError, TimeoutError, _RelayMisconfigured) as err:
            return _failure(err, progress.stage, timeout)

    async def close(self) -> None:
        """QUIT every pooled session; sessions in use close when their attempt ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for client in idle))

    # -- one attempt ---------------------------------------------------------

    async def _deliver(self, envelope: Envelope, progress: _Progress) -> AttemptResult:
        client = self._take_idle()
        if client is not None:
            progress.client = client
            try:
                return await self._transaction(client, envelope, progress)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPSenderRefused) as err:
                stale = isinstance(err, aiosmtplib.SMTPServerDisconnected) or err.code == 421
                if progress.stage != MAIL or not stale:
                    raise
                client.close()  # the relay had ended this pooled session; nothing was sent
        client = await self._connect(progress)
        return await self._transaction(client, envelope, progress)

    async def _connect(self, progress: _Progress) -> aiosmtplib.SMTP:
        """A new session, through TLS and AUTH as configured."""
        progress.stage = CONNECT
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self._local_hostname,
            timeout=None,  # the attempt's deadline bounds every step
            use_tls=self.tls == "implicit",
            start_tls=False,
            tls_context=self._tls_context,
        )
        progress.client = client
        await client.connect(timeout=self.connect_timeout)
        progress.stage = EHLO
        await client.ehlo()
        if self.tls == "starttls":
            progress.stage = STARTTLS
            if not client.supports_extension("starttls"):
                raise _RelayMisconfigured(
                    "STARTTLS: the relay does not offer it, and tls is starttls: "
                    "not sending in clear"
                )
            await client.starttls()
            await client.ehlo()
        if self.username is not None:
            progress.stage = AUTH
            if not client.supports_extension("auth"):
                raise _RelayMisconfigured(
                    "AUTH: the relay does not offer it on this connection, "
                    "and a username is configured"
                )
            await client.login(self.username, self.password or "")
        return client

    async def _transaction(
        self, client: aiosmtplib.SMTP, envelope: Envelope, progress: _Progress
    ) -> AttemptResult:
        progress.reusable = True
        refused_by_session = _session_limits(client, envelope)
        if refused_by_session is not None:
            return AttemptResult(Outcome.UNSUPPORTED, reason=f"{EHLO}: {refused_by_session}")
        encoding = "utf-8" if envelope.smtputf8 else "ascii"
        progress.stage, progress.reusable = MAIL, False
        await client.mail(
            envelope.sender, options=_mail_options(client, envelope), encoding=encoding
        )
        progress.stage = RCPT
        accepted = 0
        refusals: list[Refusal] = []
        for recipient in envelope.recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as err:
                if err.code == 421:  # the relay is closing the session
                    raise
                # RFC 5321 §4.5.3.1.10: 552 at RCPT is the old code for 452.
                refusal = Refusal(recipient, 452 if err.code == 552 else err.code, err.message)
                refusals.append(refusal)
                if accepted and too_many_recipients(refusal):
                    break  # every later recipient would get the same answer
            else:
                accepted += 1
        verdict = recipients_outcome(accepted, refusals)
        if verdict is not None:
            return verdict
        progress.stage = DATA
        reply = await client.data(envelope.content)
        progress.reusable = True
        return AttemptResult(
            Outcome.ACCEPTED,
            vendor_message_id=queue_id(reply.message) or envelope.message_id,
            status=reply.code,
            reason=refusals_reason(refusals),
        )

    # -- the pool ------------------------------------------------------------

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return None

    def _give_back(self, progress: _Progress) -> None:
        client = progress.client
        if client is None:
            return
        if progress.reusable and client.is_connected and not self._closed:
            self._idle.append(client)
        else:
            client.close()


@dataclass(slots=True)
class _Progress:
    """How far one attempt got: decides ambiguous against retriable, and whether its
    session can carry the next message."""

    stage: str = POOL
    client: aiosmtplib.SMTP | None = None
    reusable: bool = False  # the session is between transactions

    def discard(self) -> None:
        if self.client is not None:
            self.client.close()


class _RelayMisconfigured(Exception):
    """The relay cannot serve this vendor's settings (no STARTTLS, no AUTH)."""


def _failure(err: BaseException, stage: str, timeout: float) -> AttemptResult:
    """The one boundary from aiosmtplib's, ssl's and asyncio's exceptions to outcomes."""
    if isinstance(err, _RelayMisconfigured):
        return AttemptResult(Outcome.VENDOR_CONFIG, reason=str(err))
    certificate = _certificate_error(err)
    if certificate is not None:
        reason = f"TLS: the relay's certificate does not verify: {certificate.verify_message}"
        return AttemptResult(Outcome.VENDOR_CONFIG, reason=reason)
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return classify_reply(stage, err.code, err.message)
    if isinstance(err, aiosmtplib.SMTPConnectTimeoutError):
        return AttemptResult(Outcome.RETRIABLE, reason="connect timed out")
    if isinstance(err, TimeoutError):
        if stage == POOL:
            reason = f"no pooled connection came free within {timeout:.3g}s"
            return AttemptResult(Outcome.RETRIABLE, reason=reason)
        outcome = Outcome.AMBIGUOUS if stage == DATA else Outcome.RETRIABLE
        return AttemptResult(outcome, reason=f"no reply within {timeout:.3g}s ({stage})")
    if isinstance(err, aiosmtplib.SMTPConnectError):
        return AttemptResult(Outcome.RETRIABLE, reason=f"connect failed: {err.message}")
    if isinstance(err, OSError):  # ConnectionError and SMTPServerDisconnected included
        outcome = Outcome.AMBIGUOUS if stage == DATA else Outcome.RETRIABLE
        return AttemptResult(outcome, reason=f"connection lost ({stage}): {err}")
    if stage == AUTH:  # e.g. no mechanism both sides know
        return AttemptResult(Outcome.VENDOR_CONFIG, reason=f"{AUTH}: {err}")
    return AttemptResult(Outcome.RETRIABLE, reason=f"{stage}: {type(err).__name__}: {err}")


def _certificate_error(err: BaseException) -> ssl.SSLCertVerificationError | None:
    """aiosmtplib wraps a failed implicit-TLS handshake; STARTTLS lets it through."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__
    return None


def _session_limits(client: aiosmtplib.SMTP, envelope: Envelope) -> str | None:
    """Why this relay's session cannot carry the message (its EHLO said so), or None."""
    if envelope.smtputf8 and not client.supports_extension("smtputf8"):
        return "the message needs SMTPUTF8 (non-ASCII addresses or headers); the relay lacks it"
    if envelope.eight_bit and not client.supports_extension("8bitmime"):
        return "the message has 8-bit content; the relay does not offer 8BITMIME"
    limit = client.esmtp_extensions.get("size", "")
    if limit.isdigit() and 0 < int(limit) < len(envelope.content):
        size = len(envelope.content)
        return f"the relay takes at most {limit} bytes per message; this one is {size}"
    return None


def _mail_options(client: aiosmtplib.SMTP, envelope: Envelope) -> list[str]:
    options = [f"SIZE={len(envelope.content)}"] if client.supports_extension("size") else []
    if envelope.eight_bit or envelope.smtputf8:
        options.append("BODY=8BITMIME")
    if envelope.smtputf8:
        options.append("SMTPUTF8")
    return options


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit(timeout=QUIT_TIMEOUT)
    client.close()
