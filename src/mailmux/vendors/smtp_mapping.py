"""The pure half of the SMTP relay vendor: Message → the transaction's envelope, the
relay's replies → the attempt's outcome, and the vendor message id. `mailmux.vendors.smtp`
does the I/O.

An envelope is MAIL FROM the sender, RCPT TO every to/cc/bcc address (each once; Bcc is
never in the headers, `render_mime` leaves it out), then DATA with the message's MIME
(`raw_mime` as it came, else `render_mime`). A message without To needs nothing else:
the envelope carries its recipients, and a bcc-only one says
`To: undisclosed-recipients:;`. Tags and metadata are `UnsupportedFeature`: a plain
SMTP relay has no standard place for them (an ESP-specific header would reach
recipients of other relays).

How the relay's answers (and, in `mailmux.vendors.smtp`, the connection's failures) are
classified, and why (`x.7.y` is an RFC 3463 enhanced status code at the start of the
reply text):

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
Message-ID of the MIME (without angle brackets). Mailmux writes that Message-ID itself,
from mailmux's message id: every attempt and retry of one message — through this vendor
or another SMTP vendor — carries the same Message-ID, so receivers that drop duplicates
by Message-ID see one message after an ambiguous attempt was retried (SMTP has no
idempotency key of its own). A `raw_mime` message keeps its own Message-ID.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser

from mailmux.addresses import ascii_domain, ascii_email
from mailmux.message import Message
from mailmux.mime import render_mime
from mailmux.vendors.base import AttemptResult, Outcome, UnsupportedFeature

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


def build_envelope(message: Message, message_id: str, *, now: float | None = None) -> Envelope:
    """Message → the transaction. Raises UnsupportedFeature for what SMTP cannot carry.

    `message_id` is mailmux's id of the message; the Message-ID header derives from it."""
    if message.tags:
        raise UnsupportedFeature("tags: a plain SMTP relay has no standard place for them")
    if message.metadata:
        raise UnsupportedFeature("metadata: a plain SMTP relay has no standard place for it")
    recipients = tuple(
        dict.fromkeys(_smtp_address(a.email) for a in (*message.to, *message.cc, *message.bcc))
    )
    header_id: str | None
    if message.raw_mime is None:
        header_id = stable_message_id(message, message_id)
        content = render_mime(message, message_id=header_id, now=now)
    else:
        content = message.raw_mime
        header_id = _header_message_id(content)
    content = _LINE_END.sub(b"\r\n", content)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    sender = _smtp_address(message.sender.email)
    head = content.split(_HEADER_END, 1)[0]
    return Envelope(
        sender=sender,
        recipients=recipients,
        content=content,
        message_id=header_id,
        smtputf8=not (sender.isascii() and all(r.isascii() for r in recipients) and head.isascii()),
        eight_bit=not content.isascii(),
    )


def stable_message_id(message: Message, message_id: str) -> str:
    """The Message-ID (without brackets) mailmux writes for `message`: its mailmux message
    id at the sender's domain, the same on every attempt and retry of the message."""
    return f"{message_id}.mailmux@{ascii_domain(message.sender.email)}"


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
        if accepted and any(too_many_recipients(r) for r in deferred):
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


def too_many_recipients(refusal: Refusal) -> bool:
    """Whether a refusal says the relay takes no more recipients in this message."""
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
