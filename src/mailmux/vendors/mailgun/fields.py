"""A Mailgun form → one Message: Mailgun's fields, its checks, and what is exclusive.

What maps to what, and which fields are exclusive or dropped, is told in
`mailmux.vendors.mailgun.inbound`. `FormReader` is a `Checker`, so the rules
every ingress shares (line breaks in header fields, sizes, recipient count)
are the same ones here; the problems Mailgun itself reports are worded as
Mailgun words them (`say`), the others as mailmux does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from mailmux.addresses import AddressError, has_line_break, split_mailbox
from mailmux.message import (
    RESERVED_HEADERS,
    Address,
    Attachment,
    InvalidMessage,
    Message,
    MessageLimits,
    parts_size,
)
from mailmux.mime import parse_mime
from mailmux.native import JsonChecker
from mailmux.vendors.mailgun.form import FormField
from mailmux.vendors.mailgun.outbound import MESSAGES, MIME

#: Options that change how a message is sent, not what: dropped when translating.
_DROPPABLE = frozenset(
    {"o:tracking", "o:tracking-clicks", "o:tracking-opens", "o:tracking-pixel-location-top"}
    | {"o:dkim", "o:secondary-dkim", "o:secondary-dkim-public", "o:skip-verification"}
    | {"o:sending-ip", "o:sending-ip-pool", "o:archive-to", "o:suppress-headers"}
)
#: Yes/no options that are exclusive unless off.
_FLAGS = frozenset({"o:testmode", "o:require-tls"})
_OFF = frozenset({"", "no", "false", "0"})
_FIELDS = {
    MESSAGES: frozenset({"from", "to", "cc", "bcc", "subject", "text", "html"}),
    MIME: frozenset({"to", "message"}),
}
_FILES = frozenset({"attachment", "inline"})
_BODIES = ("text", "html", "amp-html", "template")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_VARIABLES = "x-mailgun-variables"
_SHOWN_ERRORS = 10


@dataclass(slots=True)
class _Extras:
    """What every endpoint takes besides its content fields."""

    headers: dict[str, str]
    reply_to: tuple[Address, ...]
    tags: tuple[str, ...]
    metadata: dict[str, str]


class FormReader(JsonChecker):
    """One form into a Message: the shared checks plus Mailgun's own, and what is exclusive."""

    __slots__ = ("exclusive", "worded")

    def __init__(self, limits: MessageLimits) -> None:
        super().__init__(limits)
        self.exclusive: list[str] = []
        self.worded: set[int] = set()  # ids of errors whose message is Mailgun's whole sentence

    def say(self, path: str, code: str, sentence: str) -> None:
        """An error worded as Mailgun words it, shown as it is."""
        self.fail(path, code, sentence)
        self.worded.add(id(self.errors[-1]))

    def summary(self) -> str:
        shown = [e.message if id(e) in self.worded else str(e) for e in self.errors]
        if len(shown) > _SHOWN_ERRORS:
            shown[_SHOWN_ERRORS:] = [f"and {len(shown) - _SHOWN_ERRORS} more problems"]
        return "; ".join(shown) or "the request cannot be sent"

    # -- /messages ---------------------------------------------------------------

    def parts(self, form: Sequence[FormField]) -> Message | None:
        fields, files, extras = self._split(form, MESSAGES)
        sender = self._sender(fields.get("from", []))
        to, cc, bcc = (self._recipients(fields.get(name, []), name) for name in ("to", "cc", "bcc"))
        if not to:
            self.say("to", "required", "'to' parameter is missing")
        self.recipients(len(to) + len(cc) + len(bcc))
        subject = self._single(fields, "subject")
        if subject is None:
            self.say("subject", "required", "'subject' parameter is missing")
        else:
            subject = self.string(subject, "subject", header=True)
        text, html = self._single(fields, "text"), self._single(fields, "html")
        if not (text or html or any(f.name in _BODIES[2:] for f in form)):
            self.say(
                "text",
                "required",
                "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters"
                " specified",
            )
        attachments = tuple(self._attachments(files))
        shown = (*((sender,) if sender else ()), *to, *cc, *extras.reply_to)
        size = parts_size(shown, subject or "", text, html, extras.headers, attachments)
        if size > self.limits.max_message_bytes:
            self.fail(
                "",
                "too_large",
                f"the message is {size} bytes; the limit is {self.limits.max_message_bytes}",
            )
        if sender is None:
            return None
        return Message(
            sender,
            to,
            cc,
            bcc,
            extras.reply_to,
            subject or "",
            text or None,
            html or None,
            extras.headers,
            attachments,
            extras.tags,
            extras.metadata,
        )

    # -- /messages.mime ------------------------------------------------------------

    def mime(self, form: Sequence[FormField], now: float) -> Message | None:
        fields, files, extras = self._split(form, MIME)
        self.exclusive.extend(f.name for f in files)  # files belong in the MIME here
        to = self._recipients(fields.get("to", []), "to")
        if not to:
            self.say("to", "required", "'to' parameter is missing")
        raw = self._raw(fields.get("message", []))
        if self.errors or raw is None:
            return None
        try:
            message = parse_mime(
                raw, envelope_to=[a.email for a in to], limits=self.limits, now=now
            )
        except InvalidMessage as err:
            self.errors.extend(err.errors)
            return None
        return replace(message, tags=extras.tags, metadata=extras.metadata)

    def _raw(self, fields: Sequence[FormField]) -> bytes | None:
        if not fields:
            self.say(
                "message", "required", "'message' parameter is missing: send the MIME as a file"
            )
            return None
        if len(fields) > 1:
            self.say("message", "repeated", "'message' parameter is given more than once")
            return None
        value = fields[0].value
        return value.encode() if isinstance(value, str) else value

    # -- the fields every endpoint shares --------------------------------------------

    def _split(
        self, form: Sequence[FormField], endpoint: str
    ) -> tuple[dict[str, list[FormField]], list[FormField], _Extras]:
        """Content fields by name, file parts, and the h:/v:/o: fields taken at once;
        everything else is dropped or exclusive."""
        content = _FIELDS[endpoint]
        fields: dict[str, list[FormField]] = {}
        files: list[FormField] = []
        extras = _Extras({}, (), (), {})
        variables: dict[str, str] = {}
        tags: dict[str, None] = {}
        for field in form:
            name = field.name
            if name in content:
                fields.setdefault(name, []).append(field)
            elif name in _FILES:
                files.append(field)
            elif name == "o:tag":
                tag = self.string(self._text(field), "o:tag", header=True, nullable=False)
                if tag:
                    tags[tag] = None
            elif name.startswith("v:"):
                self._variable(field, extras.metadata)
            elif name.startswith("h:"):
                self._header(field, extras, variables, mime=endpoint == MIME)
            elif name in _DROPPABLE:
                continue
            elif name in _FLAGS:
                if self._text(field).strip().lower() not in _OFF:
                    self.exclusive.append(name)
            else:
                self.exclusive.append(name)
        extras.tags = tuple(tags)
        extras.metadata = {**variables, **extras.metadata}
        return fields, files, extras

    def _text(self, field: FormField) -> str:
        """A field's text; a file part sent for a text field is read as UTF-8."""
        if isinstance(field.value, str):
            return field.value
        try:
            return field.value.decode()
        except UnicodeDecodeError:
            self.fail(field.name, "invalid_text", f"'{field.name}' must be UTF-8 text")
            return ""

    def _single(self, fields: dict[str, list[FormField]], name: str) -> str | None:
        found = fields.get(name, [])
        if len(found) > 1:
            self.say(name, "repeated", f"'{name}' parameter is given more than once")
        return self._text(found[0]) if found else None

    def _sender(self, fields: Sequence[FormField]) -> Address | None:
        if not fields:
            self.say("from", "required", "'from' parameter is missing")
            return None
        if len(fields) > 1:
            self.say("from", "repeated", "'from' parameter is given more than once")
            return None
        return self._mailbox(self._text(fields[0]), "from")

    def _recipients(self, fields: Sequence[FormField], name: str) -> tuple[Address, ...]:
        found: dict[str, Address] = {}
        for field in fields:
            for piece in address_list(self._text(field)):
                address = self._mailbox(piece, name)
                if address is not None:
                    found.setdefault(address.email.lower(), address)
        return tuple(found.values())

    def _mailbox(self, text: str, name: str) -> Address | None:
        try:
            return Address(*split_mailbox(text))
        except AddressError as err:
            self.say(
                name,
                err.code,
                f"'{name}' parameter is not a valid address. please check documentation"
                f" ({err.reason})",
            )
            return None

    def _header(
        self, field: FormField, extras: _Extras, variables: dict[str, str], *, mime: bool
    ) -> None:
        name = field.name[2:]
        key = name.lower()
        if mime and key != _VARIABLES:  # the MIME holds the headers: adding one is Mailgun's
            self.exclusive.append(field.name)
            return
        if has_line_break(name):
            self.fail(
                f"h:{name!r}", "header_injection", f"header name {name!r} contains a line break"
            )
            return
        if not _HEADER_NAME.fullmatch(name):
            self.fail(field.name, "invalid_header_name", f"{name!r} is not a header name")
            return
        value = self.string(self._text(field), field.name, header=True, nullable=False)
        if value is None:
            return
        if key == "reply-to":
            extras.reply_to += tuple(
                a for a in (self._mailbox(p, field.name) for p in address_list(value)) if a
            )
        elif key == _VARIABLES:
            variables.update(self._json_variables(value, field.name))
        elif key in RESERVED_HEADERS or key in {k.lower() for k in extras.headers}:
            self.exclusive.append(field.name)  # Mailgun sets it; mailmux writes or holds it once
        else:
            extras.headers[name] = value

    def _variable(self, field: FormField, metadata: dict[str, str]) -> None:
        key = self.string(field.name[2:], field.name, header=True)
        value = self.string(self._text(field), field.name, header=True, nullable=False)
        if not key:
            if key is not None:
                self.fail(field.name, "invalid_variable", "a v: field needs a name after 'v:'")
        elif key in metadata:
            self.exclusive.append(field.name)  # Mailgun keeps both; metadata holds one
        elif value is not None:
            metadata[key] = value

    def _json_variables(self, value: str, path: str) -> dict[str, str]:
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            self.fail(path, "invalid_variables", "must be a JSON object of variables")
            return {}
        found: dict[str, str] = {}
        for key, item in document.items():
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            checked = self.string(text, f"{path}.{key}", header=True, nullable=False)
            if self.string(key, f"{path}.{key!r}", header=True) and checked is not None:
                found[key] = checked
        return found

    def _attachments(self, files: Sequence[FormField]) -> list[Attachment]:
        found: list[Attachment] = []
        for index, field in enumerate(files):
            path = f"{field.name}[{index}]"
            content = field.value
            if field.filename is None or not isinstance(content, bytes):
                self.fail(path, "not_a_file", f"'{field.name}' must be a file")
                continue
            before = len(self.errors)
            filename = self.filename(field.filename, f"{path}.filename")
            inline = field.name == "inline"
            cid = self.content_id(field.filename, f"{path}.filename") if inline else None
            content_type = self.content_type(field.content_type, filename or "", path)
            self.attachment_size(len(content), path)
            if filename and len(self.errors) == before:
                found.append(Attachment(filename, content, content_type, inline, cid))
        return found


def address_list(text: str) -> list[str]:
    """An RFC 5322 address list split at its commas (not those in a quoted name)."""
    if '"' not in text:
        pieces = text.split(",")
    else:
        pieces, start, quoted, escaped = [], 0, False, False
        for index, char in enumerate(text):
            if escaped:
                escaped = False
            elif char == "\\" and quoted:
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "," and not quoted:
                pieces.append(text[start:index])
                start = index + 1
        pieces.append(text[start:])
    return [piece for piece in (p.strip() for p in pieces) if piece]
