"""The normalized email every ingress produces and every vendor consumes.

A Message is immutable and already validated: once one exists, vendors and the
Deliverer never have to re-check addresses, header injection or sizes. This
module holds what every way in and out shares: the dataclasses, the limits,
the errors, the field rules both ingresses apply (`Checker`) and the spool
encoding (`to_payload` / `from_payload`). The ways in and out are separate
modules because each drags in its own format: `mailmux.native` validates the
JSON API body, `mailmux.mime` renders and parses RFC 5322, and the
vendor-shaped ingress builds a Message itself. They all check fields through
one `Checker`, so that "valid" means one thing everywhere.

Validation reports every problem at once as `FieldError`s (path, snake_case
code, human message), because a caller fixing a request one error per round
trip is a caller who gives up. Choices worth knowing:

- Custom headers may not override what mailmux derives from the message
  (`RESERVED_HEADERS`). That includes Message-ID: several ESPs overwrite or
  refuse it, so honouring it would depend on which vendor the plan picked.
  Threading headers (In-Reply-To, References) are allowed.
- Subject, header values, display names, filenames, content ids, tags and
  metadata may not contain line breaks or NUL (`header_injection`): vendors
  are free to put tags and metadata in headers, so they get the same rule.
- An attachment's filename is reduced to a safe base name (`safe_filename`):
  what follows the last `/` or `\\`, without quotes or control characters.
  ESPs and mail clients differ in how they quote a filename in
  Content-Disposition and where they would save `../../x`; a plain base name
  means the same to all of them.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from mailmux.addresses import AddressError, has_line_break, split_mailbox

DEFAULT_TRAFFIC_CLASS = "transactional"

#: SMTP clients cannot send JSON fields; these headers carry the traffic class, the
#: deadline (RFC 3339 or seconds) and the tags (comma-separated) instead. parse_mime
#: consumes and strips them.
CLASS_HEADER = "X-Mailmux-Class"
DEADLINE_HEADER = "X-Mailmux-Deadline"
TAGS_HEADER = "X-Mailmux-Tags"

#: Lower-cased names a custom header may not use: mailmux writes them from the message
#: fields (or the MIME structure), or they belong to the receiving MTA.
RESERVED_HEADERS = frozenset(
    {"from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id"}
    | {"mime-version", "content-type", "content-transfer-encoding", "content-disposition"}
    | {"content-id", "return-path", "orig-date", CLASS_HEADER.lower(), DEADLINE_HEADER.lower()}
    | {TAGS_HEADER.lower()}
    | {f"resent-{n}" for n in ("date", "from", "sender", "to", "cc", "bcc", "message-id")}
)
_TRAFFIC_CLASS = re.compile(r"[a-z0-9_-]{1,64}")
_FILENAME_DIRS = re.compile(r".*[/\\]", re.DOTALL)  # everything up to the last separator
_FILENAME_UNSAFE = re.compile("[\"'\x00-\x1f\x7f]")  # quotes and control characters
_CONTENT_ID = re.compile(r"[!-;=?-~]+")  # printable ASCII except '<' and '>'
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")
_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}
_PAYLOAD_MAGIC = b"MMX2"  # the spool encoding, version 2


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: `email` is normalized (IDN domain kept in Unicode form)."""

    email: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A decoded attachment; `inline` ones are referenced from HTML by `content_id`."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """The vendor-shaped request a message arrived in, kept for a vendor of that ESP.

    A vendor of the same ESP forwards `body` as it came (only the credentials,
    and the Mailgun domain, become its own), so fields mailmux does not model
    (templates, tracking settings, unsubscribe groups, ...) still reach the ESP.
    `exclusive` names the fields of the request no other ESP can carry: while
    it is non-empty, every vendor of another ESP is `unsupported` for the
    message, because translating it would send something else than was asked.
    For a request that held several messages, `body` is that request narrowed
    to this one message.
    """

    shape: str  # the vendor kind whose API the request used, e.g. "sendgrid"
    endpoint: str  # which endpoint of that API, e.g. "email" or "batch"
    body: bytes
    content_type: str
    exclusive: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """What mailmux routes. `deadline` is a wall-clock instant (epoch seconds).

    `original` is the vendor-shaped request the message came in (None for the
    native API and SMTP); `client` names the configured client whose key sent it.
    """

    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    traffic_class: str = DEFAULT_TRAFFIC_CLASS
    deadline: float | None = None
    idempotency_key: str | None = None
    raw_mime: bytes | None = None
    original: Original | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """Size bounds enforced at ingress, so nothing downstream meets a message an ESP
    would refuse for size. `max_header_bytes` bounds one header value (UTF-8): far above
    any real References chain, far below Postfix's 100 KiB per-header cap."""

    max_message_bytes: int = 25 * 1024 * 1024  # bodies + decoded attachments + headers
    max_attachment_bytes: int = 25 * 1024 * 1024  # one decoded attachment
    max_recipients: int = 1000  # to + cc + bcc
    max_header_bytes: int = 16 * 1024  # subject or one custom header value


DEFAULT_LIMITS = MessageLimits()


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem: `path` like `to[0]`, `attachments[1].content` or `headers.X-Foo`
    ("" for the message as a whole), a snake_case `code` for programs, a `message` for
    people."""

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidMessage(ValueError):
    """The message cannot be accepted; `errors` holds every problem found, not the first."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(map(str, self.errors)))


def recipient_count(message: Message) -> int:
    """Recipients over to, cc and bcc: what `max_recipients` bounds."""
    return len(message.to) + len(message.cc) + len(message.bcc)


def message_size(message: Message) -> int:
    """Bytes counted against `max_message_bytes`: the raw MIME when there is one, else
    bodies + decoded attachments + headers, before transfer encoding (which adds about a
    third to base64 parts)."""
    if message.raw_mime is not None:
        return len(message.raw_mime)
    shown = (message.sender, *message.to, *message.cc, *message.reply_to)
    return parts_size(
        shown, message.subject, message.text, message.html, message.headers, message.attachments
    )


def parts_size(
    addresses: Iterable[Address],
    subject: str,
    text: str | None,
    html: str | None,
    headers: Mapping[str, str],
    attachments: Iterable[Attachment],
) -> int:
    """What `message_size` counts, from the parts: an ingress checks the size before it
    has a Message, to report it along with every other problem."""
    size = _utf8_len(subject) + _utf8_len(text or "") + _utf8_len(html or "")
    size += sum(len(a.email) + _utf8_len(a.name or "") + 4 for a in addresses)
    size += sum(len(name) + _utf8_len(value) + 4 for name, value in headers.items())
    return size + sum(len(a.content) + _utf8_len(a.filename) for a in attachments)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())  # isascii() is O(1)


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


class Checker:
    """Collects every problem while building the parts of a Message, so one pass over
    the input reports them all. It holds the field rules every ingress shares; an
    ingress adds the rules of its own format around it."""

    __slots__ = ("errors", "limits")

    def __init__(self, limits: MessageLimits) -> None:
        self.errors: list[FieldError] = []
        self.limits = limits

    def fail(self, path: str, code: str, message: str) -> None:
        self.errors.append(FieldError(path, code, message))

    def wrong_type(self, path: str, value: object, expected: str) -> None:
        self.fail(path, "invalid_type", f"must be {expected}, not {_json_type(value)}")

    def string(
        self, value: object, path: str, *, header: bool = False, nullable: bool = True
    ) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            self.wrong_type(path, value, "a string")
            return None
        if header and has_line_break(value):
            self.fail(path, "header_injection", f"{value[:80]!r} contains a line break or NUL")
            return None
        if header and _utf8_len(value) > self.limits.max_header_bytes:
            self.fail(
                path,
                "too_large",
                f"is {_utf8_len(value)} bytes; the limit is {self.limits.max_header_bytes}",
            )
            return None
        return value

    def mailbox(self, text: str, path: str) -> Address | None:
        """`"Name <addr>"` or `"addr"` as an Address."""
        try:
            return Address(*split_mailbox(text))
        except AddressError as err:
            self.fail(path, err.code, err.reason)
            return None

    def recipients(self, count: int) -> None:
        if count > self.limits.max_recipients:
            self.fail(
                "to",
                "too_many_recipients",
                f"{count} recipients over to, cc and bcc; "
                f"the limit is {self.limits.max_recipients}",
            )

    def attachment_size(self, size: int, path: str) -> None:
        if size > self.limits.max_attachment_bytes:
            self.fail(
                path,
                "too_large",
                f"is {size} bytes decoded; the limit is {self.limits.max_attachment_bytes}",
            )

    def filename(self, value: object, path: str) -> str | None:
        """An attachment's filename as its safe base name; None (with the error) if it
        is not a string, breaks a header, or has no base name."""
        text = self.string(value, path, header=True)
        if text is None:
            return None
        base = safe_filename(text)
        if not base:
            self.fail(path, "invalid_filename", f"{text[:80]!r} has no file name to send")
            return None
        return base

    def content_id(self, value: object, path: str) -> str | None:
        text = self.string(value, path, header=True)
        if text is None:
            return None
        cid = text.strip().removeprefix("<").removesuffix(">")
        if _CONTENT_ID.fullmatch(cid):
            return cid
        self.fail(path, "invalid_content_id", f"{text!r} is not a content id like logo@example")
        return None

    def traffic_class(self, value: object, path: str) -> str:
        text = self.string(value, path)
        if text is None:
            return DEFAULT_TRAFFIC_CLASS
        if _TRAFFIC_CLASS.fullmatch(text):
            return text
        self.fail(
            path,
            "invalid_class",
            f"{text!r} is not a traffic class (1 to 64 of a-z, 0-9, '_' and '-')",
        )
        return DEFAULT_TRAFFIC_CLASS

    def deadline(self, value: object, path: str, now: float) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            deadline = _parse_instant(value)
            if deadline is None:
                self.fail(
                    path,
                    "invalid_deadline",
                    f"{value[:80]!r} is not an RFC 3339 instant like 2030-01-31T12:00:00Z",
                )
                return None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                self.fail(path, "invalid_deadline", "must be a finite number of seconds")
                return None
            deadline = now + value
        else:
            self.wrong_type(path, value, "an RFC 3339 instant or a number of seconds")
            return None
        if deadline <= now:
            self.fail(path, "deadline_passed", f"the deadline {value!r} has already passed")
            return None
        return float(deadline)


def safe_filename(name: str) -> str:
    """`name`'s base name without quotes or control characters ("" if nothing is left):
    `../../etc/"passwd"` becomes `passwd`."""
    base = _FILENAME_UNSAFE.sub("", _FILENAME_DIRS.sub("", name)).strip()
    return "" if base in (".", "..") else base


def _parse_instant(text: str) -> float | None:
    if not _RFC3339.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:  # well-formed but impossible, like month 13
        return None


def to_payload(message: Message) -> bytes:
    """The spool encoding; `from_payload` gives back an equal Message.

    A small JSON header describes everything but the bulk; attachment contents
    and the raw MIME follow it as they are, one after another: `MMX2`, the
    header's length (4 bytes, big-endian), the header, then the blobs in the
    order the header lists their sizes (the vendor-shaped request a message
    came in, when kept, is the last blob). Keeping bytes out of the JSON means a
    20 MB attachment is copied once into the payload, not turned into a 27 MB
    base64 string and then a 27 MB JSON document. Versioned so a spool written
    by an older mailmux stays readable (`from_payload` still reads version 1,
    all-JSON with base64).
    """
    blobs = [a.content for a in message.attachments]
    if message.raw_mime is not None:
        blobs.append(message.raw_mime)
    original = message.original
    if original is not None:
        blobs.append(original.body)
    header = orjson.dumps(
        {
            "sender": _address_out(message.sender),
            **{
                key: [_address_out(a) for a in getattr(message, key)]
                for key in ("to", "cc", "bcc", "reply_to")
            },
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": dict(message.headers),
            "attachments": [
                [a.filename, a.content_type, a.inline, a.content_id] for a in message.attachments
            ],
            "tags": message.tags,
            "metadata": dict(message.metadata),
            "class": message.traffic_class,
            "deadline": message.deadline,
            "idempotency_key": message.idempotency_key,
            "raw_mime": message.raw_mime is not None,
            "original": None
            if original is None
            else [original.shape, original.endpoint, original.content_type, original.exclusive],
            "client": message.client,
            "blobs": [len(blob) for blob in blobs],
        }
    )
    return b"".join((_PAYLOAD_MAGIC, len(header).to_bytes(4, "big"), header, *blobs))


def from_payload(data: bytes) -> Message:
    """The Message `to_payload` wrote; ValueError if `data` is not a payload of a known
    version."""
    if not data.startswith(_PAYLOAD_MAGIC):
        return _from_json_payload(data)
    start = len(_PAYLOAD_MAGIC) + 4
    end = start + int.from_bytes(data[len(_PAYLOAD_MAGIC) : start], "big")
    doc = orjson.loads(memoryview(data)[start:end])
    blobs = []
    for size in doc["blobs"]:
        blobs.append(data[end : end + size])
        end += size
    if end != len(data):
        raise ValueError("a mailmux message payload whose parts do not add up")
    kept = doc.get("original")
    original = (
        None if kept is None else Original(kept[0], kept[1], blobs.pop(), kept[2], tuple(kept[3]))
    )
    raw = blobs.pop() if doc["raw_mime"] else None
    attachments = tuple(
        Attachment(f, content, t, i, cid)
        for (f, t, i, cid), content in zip(doc["attachments"], blobs, strict=True)
    )
    return _message_from(doc, attachments, raw, original)


def _from_json_payload(data: bytes) -> Message:
    """Version 1: one JSON document, bytes as base64."""
    doc = orjson.loads(data)
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("not a mailmux message payload of a known version")
    attachments = tuple(
        Attachment(f, base64.b64decode(c), t, i, cid) for f, c, t, i, cid in doc["attachments"]
    )
    raw = doc["raw_mime"]
    return _message_from(doc, attachments, None if raw is None else base64.b64decode(raw))


def _message_from(
    doc: dict[str, Any],
    attachments: tuple[Attachment, ...],
    raw_mime: bytes | None,
    original: Original | None = None,
) -> Message:
    to, cc, bcc, reply_to = (
        tuple(Address(*a) for a in doc[key]) for key in ("to", "cc", "bcc", "reply_to")
    )
    return Message(
        Address(*doc["sender"]),
        to,
        cc,
        bcc,
        reply_to,
        doc["subject"],
        doc["text"],
        doc["html"],
        doc["headers"],
        attachments,
        tuple(doc["tags"]),
        doc["metadata"],
        doc["class"],
        doc["deadline"],
        doc["idempotency_key"],
        raw_mime,
        original,
        doc.get("client"),
    )


def _address_out(address: Address) -> list[str | None]:
    return [address.email, address.name]
