"""RFC 5322 in and out: `render_mime` for vendors that take raw MIME, `parse_mime`
for what SMTP clients submit.

Kept apart from the Message because the email package brings its own world:
policies, multipart trees, surrogate-escaped headers and a zoo of exceptions
on hostile input, none of which the JSON ingress or the spool should meet.
Parsed fields go through the same `mailmux.message.Checker` as native ones.

A MIME message needs neither `text` nor `html`: it travels as `raw_mime`, and
the envelope, when there is one, decides who receives it.
"""

from __future__ import annotations

import email.utils
import mimetypes
import re
import time
from collections.abc import Iterator, Sequence
from email import policy
from email.errors import MessageError
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser

from mailmux.addresses import AddressError, ascii_domain, ascii_email, clean_name, normalize
from mailmux.message import (
    CLASS_HEADER,
    DEADLINE_HEADER,
    DEFAULT_LIMITS,
    RESERVED_HEADERS,
    TAGS_HEADER,
    Address,
    Attachment,
    Checker,
    FieldError,
    InvalidMessage,
    Message,
    MessageLimits,
    safe_filename,
)

# Added by relays on the way; meaningless once the message is re-sent through an ESP API.
_TRACE_HEADERS = frozenset(
    {"received", "dkim-signature", "authentication-results", "arc-seal"}
    | {"arc-message-signature", "arc-authentication-results"}
)
_HEADER_END = re.compile(rb"\n\r?\n")
_BODY_TYPES = {"text/plain": "text", "text/html": "html"}
# Re-serializes an attached message as it came: CRLF, long header lines left alone.
_VERBATIM = policy.SMTP.clone(refold_source="none")


class _RememberingRegistry(HeaderRegistry):
    """policy.default's header factory, remembering the headers it parsed lately.

    The email package parses a header again on every fetch, and reading one MIME
    message fetches Content-Type and friends dozens of times (the parser itself,
    then each part's type, disposition and filename): measured, three quarters
    of `parse_mime`'s time. A parsed header is immutable, so one parse can serve
    every fetch of the same name and value. Only short values are kept, and at
    most `_REMEMBERED` of them, so no message's content stays in memory for long.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > _REMEMBERED_CHARS:
            return super().__call__(name, value)
        key = (name, value)  # exact: a header keeps the name as the message spells it
        header = self._seen.get(key)
        if header is None:
            if len(self._seen) >= _REMEMBERED:
                self._seen.clear()
            header = self._seen[key] = super().__call__(name, value)
        return header


_REMEMBERED = 1024
_REMEMBERED_CHARS = 200
_READING = policy.default.clone(header_factory=_RememberingRegistry())
# The email package meets hostile input with a zoo of exceptions (some of them plain bugs,
# like IndexError on "To: bob@"); parse_mime turns these into InvalidMessage.
_PARSER_ERRORS = (ValueError, LookupError, IndexError, AttributeError, TypeError, MessageError)


def render_mime(
    message: Message, *, message_id: str | None = None, now: float | None = None
) -> bytes:
    """The RFC 5322 bytes for `message` (its `raw_mime` unchanged when it has one).

    Bcc, tags and metadata are not written: the first is the envelope's business, the
    others each vendor maps its own way. A message with neither To nor Cc (bcc only) gets
    `To: undisclosed-recipients:;`, an empty group (RFC 5322 §A.1.3): readers see that
    the recipients are hidden, and a relay that "repairs" a message without recipient
    fields (sendmail's Apparently-To, MTAs that write RCPT TO into a To field) finds
    nothing to repair, so it cannot show bcc recipients to each other. SMTPUTF8 output
    only when an address needs it (non-ASCII local part); IDN domains otherwise go out in
    punycode. Bodies go out with CRLF line ends and a final line end, so parse_mime gives
    back `\n`-ended text.
    """
    if message.raw_mime is not None:
        return message.raw_mime
    shown = (message.sender, *message.to, *message.cc, *message.reply_to)
    utf8 = any(ascii_email(a.email) is None for a in shown)
    mime = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    mime["From"] = _format_address(message.sender, utf8)
    for name, addresses in (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if addresses:
            mime[name] = ", ".join(_format_address(a, utf8) for a in addresses)
    if not (message.to or message.cc):
        mime["To"] = "undisclosed-recipients:;"
    if message.subject:
        mime["Subject"] = message.subject
    mime["Date"] = email.utils.formatdate(time.time() if now is None else now, usegmt=True)
    if message_id is None:
        message_id = email.utils.make_msgid(domain=ascii_domain(message.sender.email))
    mime["Message-ID"] = message_id if message_id.startswith("<") else f"<{message_id}>"
    for name, value in message.headers.items():
        mime[name] = value
    _add_body(mime, message)
    return mime.as_bytes()


def _format_address(address: Address, utf8: bool) -> str:
    addr = address.email if utf8 else ascii_email(address.email) or address.email
    if address.name is None:
        return addr
    quoted = address.name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{addr}>'


def _add_body(mime: EmailMessage, message: Message) -> None:
    """text and html as multipart/alternative; inline parts in a multipart/related with
    the body that refers to them; other attachments around it all in multipart/mixed."""
    related: MIMEPart = mime
    if message.html is None:
        mime.set_content(message.text or "")
    elif message.text is None:
        mime.set_content(message.html, subtype="html")
    else:
        mime.set_content(message.text)
        mime.add_alternative(message.html, subtype="html")
        related = list(mime.iter_parts())[1]
    # Inline parts first: once `mime` is multipart/mixed it cannot become related.
    for a in sorted(message.attachments, key=lambda a: not a.inline):
        maintype, _, subtype = a.content_type.partition("/")
        if a.inline:
            related.add_related(
                a.content,
                maintype,
                subtype,
                disposition="inline",
                filename=a.filename,
                cid=f"<{a.content_id}>",
            )
        elif a.content_type == "message/rfc822":  # RFC 2046 forbids base64 here
            inner = BytesParser(policy=mime.policy).parsebytes(a.content)
            mime.add_attachment(inner, filename=a.filename)
        else:
            mime.add_attachment(a.content, maintype, subtype, filename=a.filename)


def parse_mime(
    raw: bytes,
    *,
    envelope_from: str | None = None,
    envelope_to: Sequence[str] = (),
    limits: MessageLimits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Message:
    """A Message from RFC 5322 bytes as an SMTP client submits them.

    The envelope is authoritative: with `envelope_to`, To/Cc keep only the addresses in
    it and the rest of it becomes bcc; `envelope_from` stands in for a missing From.
    `raw_mime` is `raw`, minus any Bcc header (RFC 5322 §3.6.3: it must not reach the
    recipients) and the X-Mailmux-* control headers. `now` anchors a relative deadline.
    """
    if len(raw) > limits.max_message_bytes:
        raise InvalidMessage(
            [
                FieldError(
                    "",
                    "too_large",
                    f"the message is {len(raw)} bytes; the limit is {limits.max_message_bytes}",
                )
            ]
        )
    check = Checker(limits)
    try:
        return _parse_mime(
            check, raw, envelope_from, envelope_to, time.time() if now is None else now
        )
    except InvalidMessage:
        raise
    except _PARSER_ERRORS as err:
        check.fail("", "invalid_mime", f"the message cannot be parsed: {err}")
        raise InvalidMessage(check.errors) from err


def _parse_mime(
    check: Checker, raw: bytes, envelope_from: str | None, envelope_to: Sequence[str], now: float
) -> Message:
    mime = BytesParser(policy=_READING).parsebytes(raw)
    senders = _header_addresses(check, mime, "From", "from")
    sender = senders[0] if senders else None
    if len(senders) > 1:
        check.fail("from", "invalid_address", "several From addresses are not supported")
    elif sender is None and envelope_from:
        sender = check.mailbox(envelope_from, "envelope_from")
    elif sender is None and not check.errors:
        check.fail("from", "required", "the message has no From header")
    to, cc = (_header_addresses(check, mime, h, h.lower()) for h in ("To", "Cc"))
    reply_to = _header_addresses(check, mime, "Reply-To", "reply_to")
    bcc = _header_addresses(check, mime, "Bcc", "bcc")
    if envelope_to:
        found = (check.mailbox(a, f"envelope_to[{i}]") for i, a in enumerate(envelope_to))
        envelope = {a.email.lower(): a for a in found if a is not None}
        to = tuple(a for a in to if a.email.lower() in envelope)
        cc = tuple(a for a in cc if a.email.lower() in envelope)
        shown = {a.email.lower() for a in (*to, *cc)}
        bcc = tuple(a for key, a in envelope.items() if key not in shown)
    if not (to or cc or bcc or check.errors):
        check.fail("to", "required", "the message has no recipients (To, Cc, Bcc or envelope)")
    check.recipients(len(to) + len(cc) + len(bcc))
    subject = check.string(_header_text(mime, "Subject"), "subject", header=True) or ""
    text, html, attachments = _mime_parts(check, mime)
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for name in mime:  # names only: parsing a skipped header could only fail
        key = name.lower()
        if key in RESERVED_HEADERS or key in _TRACE_HEADERS or key in seen:
            continue
        seen.add(key)  # a repeated custom header keeps its first value
        header = check.string(_header_text(mime, name), f"headers.{name}", header=True)
        if header is not None:
            headers[name] = header
    traffic_class = check.traffic_class(_header_text(mime, CLASS_HEADER), CLASS_HEADER)
    deadline = check.deadline(
        _seconds_or_text(_header_text(mime, DEADLINE_HEADER)), DEADLINE_HEADER, now
    )
    tags = _tags(check, mime)
    if check.errors or sender is None:
        raise InvalidMessage(check.errors)
    private = {b"bcc"} | {h.lower().encode() for h in (CLASS_HEADER, DEADLINE_HEADER, TAGS_HEADER)}
    if any(name.lower().encode() in private for name in mime):
        raw = _without_fields(raw, private)
    return Message(
        sender,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        text,
        html,
        headers,
        tuple(attachments),
        tags=tags,
        traffic_class=traffic_class,
        deadline=deadline,
        raw_mime=raw,
    )


def _header_addresses(
    check: Checker, mime: EmailMessage, name: str, path: str
) -> tuple[Address, ...]:
    found: list[Address] = []
    try:
        mailboxes = [m for header in mime.get_all(name, []) for m in header.addresses]
    except _PARSER_ERRORS as err:
        check.fail(path, "invalid_address", f"the {name} header cannot be parsed: {err!r}")
        return ()
    for mailbox in mailboxes:
        try:
            addr = normalize(_unescape(mailbox.addr_spec))
            found.append(Address(addr, clean_name(_unescape(mailbox.display_name))))
        except AddressError as err:
            check.fail(f"{path}[{len(found)}]", err.code, err.reason)
    return tuple(found)


def _tags(check: Checker, mime: EmailMessage) -> tuple[str, ...]:
    """`X-Mailmux-Tags: a, b` → ("a", "b"); every such header counts, empty items do not.
    Each tag obeys the header rules (no line break or NUL), as a native API tag does."""
    found: list[str] = []
    for value in mime.get_all(TAGS_HEADER, []):
        for item in _unescape(str(value)).split(","):
            tag = check.string(item.strip(), f"{TAGS_HEADER}[{len(found)}]", header=True)
            if tag and tag not in found:
                found.append(tag)
    return tuple(found)


def _seconds_or_text(text: str | None) -> float | str | None:
    """A header carries a relative deadline as text: "60" means 60 seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _header_text(mime: EmailMessage, name: str) -> str | None:
    value = mime.get(name)
    return None if value is None else _unescape(str(value))


def _unescape(text: str) -> str:
    """Undo the parser's surrogate escapes of raw UTF-8 header bytes (SMTPUTF8 mail)."""
    return (
        text
        if text.isascii()
        else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    )


def _leaves(part: MIMEPart) -> Iterator[MIMEPart]:
    if part.get_content_maintype() == "multipart":
        for child in part.iter_parts():
            yield from _leaves(child)
    else:
        yield part


def _mime_parts(
    check: Checker, mime: EmailMessage
) -> tuple[str | None, str | None, list[Attachment]]:
    """The first text/plain and text/html that are not attachments are the bodies; every
    other leaf is an attachment, inline when it has a Content-ID and is not marked
    `attachment` (an inline part nothing can refer to is just an attachment)."""
    bodies: dict[str, str | None] = {"text": None, "html": None}
    attachments: list[Attachment] = []
    for part in _leaves(mime):
        ctype, disposition = part.get_content_type(), part.get_content_disposition()
        body = _BODY_TYPES.get(ctype)
        if (
            body is not None
            and bodies[body] is None
            and disposition != "attachment"
            and part.get_filename() is None
        ):
            try:
                bodies[body] = part.get_content().replace("\r\n", "\n")
            except LookupError as err:  # an unknown charset
                check.fail(body, "invalid_mime", f"cannot decode the body: {err}")
            continue
        path = f"attachments[{len(attachments)}]"
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):  # message/*: the payload is parsed messages
            content = b"".join(
                m.as_bytes(policy=_VERBATIM) for m in part.get_payload() if isinstance(m, MIMEPart)
            )
        check.attachment_size(len(content), f"{path}.content")
        given = part.get_filename()
        filename = check.string(
            None if given is None else _unescape(given), f"{path}.filename", header=True
        )
        if filename is None or not safe_filename(filename):  # a name of our own instead
            filename = f"attachment-{len(attachments) + 1}{mimetypes.guess_extension(ctype) or ''}"
        else:
            filename = safe_filename(filename)
        cid_header = part.get("Content-ID")
        cid = check.content_id(
            None if cid_header is None else str(cid_header), f"{path}.content_id"
        )
        if filename is not None:
            inline = cid is not None and disposition != "attachment"
            attachments.append(Attachment(filename, content, ctype, inline, cid))
    return bodies["text"], bodies["html"], attachments


def _without_fields(raw: bytes, names: set[bytes]) -> bytes:
    """`raw` without the named header fields (lower-case), continuation lines included."""
    end = _HEADER_END.search(raw)
    split = end.start() + 1 if end else len(raw)
    kept: list[bytes] = []
    dropping = False
    for line in raw[:split].splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):
            dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[split:]
