"""SMTP relay (`kind: smtp`): any SMTP server that relays for us — a smarthost, or an
ESP's SMTP interface — over aiosmtplib, with STARTTLS or implicit TLS and AUTH.

One attempt is one SMTP transaction: MAIL FROM the sender, RCPT TO every to/cc/bcc
address (each once; Bcc is never in the headers, `render_mime` leaves it out), then
DATA with the message's MIME (`raw_mime` as it came, else `render_mime`). How the
relay's answers are classified, and why (`x.7.y` is an RFC 3463 enhanced status code
at the start of the reply text):

=========================  ================  ============================================
where                      reply / event     outcome, and why
=========================  ================  ============================================
waiting for a connection,  refused, timeout  retriable: nothing was sent.
connect, greeting
greeting, EHLO, STARTTLS,  4xx               retriable (rate_limited if the text says the
AUTH                                         relay throttles: "throttling", "rate limit",
                                             "sending quota", …).
                           5xx               vendor_config: the relay will not serve this
                                             account (banned IP, bad credentials, TLS
                                             refused) whatever the message.
STARTTLS                   not offered       vendor_config: with `tls: starttls` mail is
                                             never sent in clear.
TLS                        certificate fails vendor_config: wrong host or trust store.
AUTH                       not offered       vendor_config (a username is configured).
MAIL FROM                  4xx               retriable / rate_limited, as above.
                           530, 534, 535,    vendor_config: authentication, relaying or
                           538, 5.7.x        sender policy (relay denied, sender not
                                             allowed or not verified) — another vendor
                                             may well send this sender's mail.
                           other 5xx         permanent: the sender address is bad.
RCPT TO (per recipient)    2xx               accepted for that recipient.
                           4xx (552 counts   deferred. Any deferral: retriable for the
                           as 452, RFC 5321  whole message, which is not sent (RSET by
                           §4.5.3.1.10)      closing): a recipient is never dropped
                                             silently. But 452 4.5.3 "too many
                                             recipients" after some were accepted:
                                             unsupported, the relay takes fewer
                                             recipients per message than this one has.
                           5xx               refused. Some refused, some accepted: the
                                             message goes to the accepted ones, outcome
                                             accepted with the refused ones in `reason`.
                                             All refused: vendor_config if any refusal
                                             is 530 or 5.7.x (relay access denied), else
                                             permanent.
DATA (final reply)         250               accepted.
                           4xx               retriable / rate_limited, as above.
                           5.7.x             vendor_config: a relay accepts and bounces
                                             later, so a policy refusal at DATA is about
                                             the account or the sender's domain (SPF,
                                             DKIM, DMARC, unverified sender).
                           other 5xx         permanent: the relay refused the content.
DATA                       timeout, drop     ambiguous: aiosmtplib sends the DATA command
                                             and the content as one step, so the content
                                             may have arrived and been accepted.
before DATA                timeout, drop     retriable: no content was sent.
=========================  ================  ============================================

Vendor message id: the relay's queue id from the final reply ("queued as 4BqX",
"id=1qX-0A", Amazon SES's "Ok 0100…", Sendmail's "<id> Message accepted"), else the
Message-ID of the MIME (without angle brackets). Mailmux writes that Message-ID itself:
derived from the idempotency key when the message has one, so every attempt — through
this vendor or another SMTP vendor — carries the same Message-ID and receivers that
drop duplicates by Message-ID see one message after an ambiguous attempt was retried;
random per attempt otherwise. A `raw_mime` message keeps its own Message-ID.

What a plain SMTP relay cannot carry is `UnsupportedFeature` before connecting: tags and
metadata (no standard place for them; an ESP-specific header would reach recipients of
other relays). After EHLO, with nothing sent: 8-bit content without 8BITMIME, addresses
or headers that need SMTPUTF8 without it, and a message above the relay's SIZE limit.
The idempotency key itself has no SMTP counterpart beyond the Message-ID.

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
import email.utils
import hashlib
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from typing import Literal

import aiosmtplib

from mailmux.addresses import ascii_domain, ascii_email
from mailmux.message import Message
from mailmux.mime import render_mime
from mailmux.vendors.base import AttemptResult, Outcome, UnsupportedFeature, Vendor

TlsMode = Literal["none", "starttls", "implicit"]
TLS_MODES: tuple[TlsMode, ...] = ("none", "starttls", "implicit")
DEFAULT_POOL_SIZE = 4
#: How long close() waits for each pooled session's QUIT.
QUIT_TIMEOUT = 1.0

# Where an attempt is; named as the reason shows them.
POOL, CONNECT, EHLO, STARTTLS, AUTH = "pool", "connect", "EHLO", "STARTTLS", "AUTH"
MAIL, RCPT, DATA = "MAIL FROM", "RCPT TO", "DATA"
_SESSION_STAGES = frozenset({CONNECT, EHLO, STARTTLS, AUTH})

#: Replies about authentication whatever their enhanced code (RFC 4954).
_AUTH_CODES = frozenset({530, 534, 535, 538})
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\b")
_THROTTLED = re.compile(
    r"throttl|rate.?limit|sending rate|too many (?:messages|mails|emails|connections)"
    r"|(?:daily|sending|message|send) quota",
    re.IGNORECASE,
)
_TOO_MANY_RECIPIENTS = re.compile(r"too many recipients", re.IGNORECASE)
_QUEUE_IDS = (
    re.compile(r"queued as\s+<?([^\s<>;,]+)", re.IGNORECASE),  # Postfix and most others
    re.compile(r"\bid=([^\s;,]+)", re.IGNORECASE),  # Exim
    re.compile(r"^(?:2\.\d{1,3}\.\d{1,3}\s+)?ok\s+(\S{16,})\s*$", re.IGNORECASE),  # SES
    re.compile(r"^(?:2\.\d{1,3}\.\d{1,3}\s+)?(\S+)\s+message accepted", re.IGNORECASE),
)
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_HEADER_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one SMTP transaction sends: who from, to whom, which bytes."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes  # CRLF line ends, ending with CRLF
    message_id: str | None  # the Message-ID header's id, without angle brackets
    smtputf8: bool  # an address or a header needs SMTPUTF8 (RFC 6531)
    eight_bit: bool  # the content has 8-bit bytes: BODY=8BITMIME (RFC 6152)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One recipient the relay did not take at RCPT TO."""

    recipient: str
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.recipient} ({self.code} {self.text})"


def build_envelope(message: Message, *, now: float | None = None) -> Envelope:
    """Message → the transaction. Raises UnsupportedFeature for what SMTP cannot carry."""
    if message.tags:
        raise UnsupportedFeature("tags: a plain SMTP relay has no standard place for them")
    if message.metadata:
        raise UnsupportedFeature("metadata: a plain SMTP relay has no standard place for it")
    recipients = tuple(
        dict.fromkeys(_smtp_address(a.email) for a in (*message.to, *message.cc, *message.bcc))
    )
    if message.raw_mime is None:
        message_id: str | None = stable_message_id(message)
        content = render_mime(message, message_id=message_id, now=now)
    else:
        content = message.raw_mime
        message_id = _header_message_id(content)
    content = _LINE_END.sub(b"\r\n", content)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    sender = _smtp_address(message.sender.email)
    head = content.split(_HEADER_END, 1)[0]
    return Envelope(
        sender=sender,
        recipients=recipients,
        content=content,
        message_id=message_id,
        smtputf8=not (sender.isascii() and all(r.isascii() for r in recipients) and head.isascii()),
        eight_bit=not content.isascii(),
    )


def stable_message_id(message: Message) -> str:
    """The Message-ID (without brackets) mailmux writes: one per idempotency key, so that
    retries of one message share it; random when the message has no key."""
    domain = ascii_domain(message.sender.email)
    if message.idempotency_key is None:
        return email.utils.make_msgid(domain=domain).strip("<>")
    digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
    return f"{digest}.mailmux@{domain}"


def queue_id(reply_text: str) -> str | None:
    """The relay's id for the queued message, from the text of its final 250 reply."""
    for pattern in _QUEUE_IDS:
        match = pattern.search(reply_text)
        if match is not None:
            return match.group(1)
    return None


def classify_reply(stage: str, code: int, text: str) -> AttemptResult:
    """A failing reply to a command of the transaction or session → the attempt's result."""
    reason = f"{stage}: {code} {text}".rstrip()
    if 400 <= code < 500:
        throttled = _THROTTLED.search(text) is not None
        return AttemptResult(
            Outcome.RATE_LIMITED if throttled else Outcome.RETRIABLE, status=code, reason=reason
        )
    if 500 <= code < 600:
        if stage in _SESSION_STAGES or code in _AUTH_CODES or is_policy(text):
            return AttemptResult(Outcome.VENDOR_CONFIG, status=code, reason=reason)
        return AttemptResult(Outcome.PERMANENT, status=code, reason=reason)
    # Not an error reply at all (garbage or a 2xx/3xx out of place): nothing certain about
    # the message, so never a permanent failure.
    outcome = Outcome.AMBIGUOUS if stage == DATA else Outcome.RETRIABLE
    return AttemptResult(outcome, status=code if code > 0 else None, reason=reason)


def is_policy(text: str) -> bool:
    """Whether a reply carries a 5.7.x (security or policy) enhanced status code."""
    match = _ENHANCED.match(text)
    return match is not None and match[1] == "5" and match[2] == "7"


def recipients_outcome(accepted: int, refusals: Sequence[Refusal]) -> AttemptResult | None:
    """What the RCPT TO replies decide; None means "go on to DATA"."""
    deferred = [r for r in refusals if r.code < 500]
    if deferred:
        first = deferred[0]
        if accepted and any(_too_many_recipients(r) for r in deferred):
            reason = (
                f"{RCPT}: the relay takes at most {accepted} recipients per message, this "
                f"one has {accepted + len(refusals)}: {first}"
            )
            return AttemptResult(Outcome.UNSUPPORTED, status=first.code, reason=reason)
        return AttemptResult(Outcome.RETRIABLE, status=first.code, reason=refusals_reason(refusals))
    if refusals and not accepted:
        policy_refusals = [r for r in refusals if r.code in _AUTH_CODES or is_policy(r.text)]
        outcome = Outcome.VENDOR_CONFIG if policy_refusals else Outcome.PERMANENT
        first = (policy_refusals or refusals)[0]
        return AttemptResult(outcome, status=first.code, reason=refusals_reason(refusals))
    return None


def refusals_reason(refusals: Sequence[Refusal]) -> str:
    """Every recipient not taken: `RCPT TO: deferred a (451 …); refused b (550 …)`."""
    parts = [
        f"{label} " + "; ".join(map(str, group))
        for label, group in (
            ("deferred", [r for r in refusals if r.code < 500]),
            ("refused", [r for r in refusals if r.code >= 500]),
        )
        if group
    ]
    return f"{RCPT}: " + "; ".join(parts) if parts else ""


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

    async def send(self, message: Message, timeout: float) -> AttemptResult:
        try:
            envelope = build_envelope(message)
        except UnsupportedFeature as err:
            return AttemptResult(Outcome.UNSUPPORTED, reason=f"{self.kind}: {err}")
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
                if accepted and _too_many_recipients(refusal):
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


def _too_many_recipients(refusal: Refusal) -> bool:
    enhanced = _ENHANCED.match(refusal.text)
    if enhanced is not None:
        return enhanced[2] == "5" and enhanced[3] == "3"  # x.5.3: too many recipients
    return refusal.code == 452 and _TOO_MANY_RECIPIENTS.search(refusal.text) is not None


def _smtp_address(addr: str) -> str:
    """The address as the envelope carries it: IDN domains in punycode; a non-ASCII local
    part stays UTF-8 (it needs SMTPUTF8)."""
    return ascii_email(addr) or addr


def _header_message_id(raw: bytes) -> str | None:
    value = BytesHeaderParser(policy=policy.compat32).parsebytes(raw).get("Message-ID")
    return None if value is None else str(value).strip().strip("<>") or None


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit(timeout=QUIT_TIMEOUT)
    client.close()
