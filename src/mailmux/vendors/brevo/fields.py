"""The fields of Brevo's send request, read with the shared rules and worded as Brevo's 400s.

`inbound` decides what a request is (its messages, what is exclusive); this
module reads one field at a time: contacts, headers (Brevo's own ones taken
out), attachments, tags, and the parts a message version may replace. Each
problem is collected, never raised, so one answer names them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mailmux.addresses import AddressError, clean_name, has_line_break, normalize
from mailmux.message import RESERVED_HEADERS, Address, Attachment, MessageLimits
from mailmux.native import JsonChecker
from mailmux.vendors.brevo.outbound import ALLOWED_EXTENSIONS, IDEMPOTENCY_HEADER, METADATA_HEADER
from mailmux.vendors.brevo.replies import INVALID

#: What a message version may hold; anything else in one is exclusive.
VERSION_FIELDS = frozenset(
    {"to", "cc", "bcc", "replyTo", "subject", "htmlContent", "textContent", "params"}
    | {"templateId"}
)
#: Headers that ask Brevo for something (sandbox, dedicated IP): exclusive.
_EXCLUSIVE_HEADERS = frozenset({"x-sib-sandbox", "sender.ip"})
_CONTACT_FIELDS = frozenset({"email", "name"})
_SENDER_FIELDS = frozenset({"email", "name", "id"})
_ATTACHMENT_FIELDS = frozenset({"content", "name", "url"})


@dataclass(frozen=True, slots=True)
class Parts:
    """What a version may replace: recipients, subject and contents."""

    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    text: str
    html: str


class FieldReader:
    """The shared field rules (`JsonChecker`) worded as Brevo words its 400s.

    Brevo-worded problems have no path, so the error message is Brevo's text
    alone; the shared rules' problems keep theirs (`headers.X-A: ...`).
    """

    def __init__(self, limits: MessageLimits) -> None:
        self.check = JsonChecker(limits)
        self.exclusive: set[str] = set()

    def fail(self, code: str, message: str) -> None:
        self.check.fail("", code, message)

    def unknown(self, fields: Mapping[str, object], known: frozenset[str], prefix: str) -> None:
        self.exclusive.update(f"{prefix}{name}" for name in fields if name not in known)

    def sender(self, value: object, *, required: bool) -> Address | None:
        if value is None:
            if required:
                self.fail("required", "sender is missing")
            return None
        if not isinstance(value, dict):
            self.fail(INVALID, "sender is not valid")
            return None
        fields = present(value)
        if "id" in fields:
            self.exclusive.add("sender.id")
            if not isinstance(fields["id"], int) or isinstance(fields["id"], bool):
                self.fail(INVALID, "sender id is not valid")
            if "email" not in fields:
                return None
        if "email" not in fields:
            self.fail(INVALID, "sender is not valid: it needs an email or an id")
            return None
        return self.contact(fields, "sender", _SENDER_FIELDS)

    def contact(
        self, value: object, where: str, known: frozenset[str] = _CONTACT_FIELDS
    ) -> Address | None:
        if not isinstance(value, dict):
            self.fail(INVALID, f"email is not valid in {where}")
            return None
        fields = present(value)
        self.unknown(fields, known, f"{where.partition(' ')[0]}.")
        email = fields.get("email")
        if email is None:
            self.fail("required", f"email is missing in {where}")
            return None
        name = self.check.string(fields.get("name"), f"{where}.name", header=True)
        if not isinstance(email, str):
            self.fail(INVALID, f"email is not valid in {where}")
            return None
        try:
            return Address(normalize(email), None if name is None else clean_name(name))
        except AddressError as err:
            self.fail(INVALID, f"email is not valid in {where}: {err.reason}")
            return None

    def contacts(self, value: object, where: str) -> tuple[Address, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(INVALID, f"email is not valid in {where}")
            return ()
        found = (self.contact(item, where) for item in value)
        return tuple(address for address in found if address is not None)

    def parts(self, fields: Mapping[str, Any], where: str) -> Parts:
        reply_to = fields.get("replyTo")
        replier = None if reply_to is None else self.contact(reply_to, f"replyTo{where}")
        return Parts(
            to=self.contacts(fields.get("to"), f"to{where}"),
            cc=self.contacts(fields.get("cc"), f"cc{where}"),
            bcc=self.contacts(fields.get("bcc"), f"bcc{where}"),
            reply_to=() if replier is None else (replier,),
            subject=self.text(fields.get("subject"), f"subject{where}", header=True),
            text=self.text(fields.get("textContent"), f"textContent{where}"),
            html=self.text(fields.get("htmlContent"), f"htmlContent{where}"),
        )

    def version(
        self, shared: Parts, value: Mapping[str, Any], index: int, templated: bool
    ) -> tuple[Parts, bool, frozenset[str]]:
        """A version's parts over the shared ones, whether a template fills it, its exclusives."""
        fields = present(value)
        own = self.parts(fields, f" in messageVersions[{index}]")
        parts = Parts(
            to=own.to,
            cc=own.cc if "cc" in fields else shared.cc,
            bcc=own.bcc if "bcc" in fields else shared.bcc,
            reply_to=own.reply_to if "replyTo" in fields else shared.reply_to,
            subject=own.subject if "subject" in fields else shared.subject,
            text=own.text if "textContent" in fields else shared.text,
            html=own.html if "htmlContent" in fields else shared.html,
        )
        exclusive = {f"messageVersions.{name}" for name in fields if name not in VERSION_FIELDS}
        asked = (name for name in ("params", "templateId") if given(fields.get(name)))
        exclusive.update(f"messageVersions.{name}" for name in asked)
        return parts, templated or given(fields.get("templateId")), frozenset(exclusive)

    def text(self, value: object, path: str, *, header: bool = False) -> str:
        return self.check.string(value, path, header=header) or ""

    def headers(self, value: object) -> tuple[dict[str, str], dict[str, str]]:
        """The mail headers and the metadata; Brevo's own headers are taken out."""
        if not isinstance(value, dict):
            return self.check.headers(value), {}
        value = present(value)
        standard = {name: v for name, v in value.items() if name.lower() in RESERVED_HEADERS}
        for name, header_value in standard.items():
            self.exclusive.add(f"headers.{name}")
            self.check.string(header_value, f"headers.{name}", header=True, nullable=False)
        custom = {name: v for name, v in value.items() if name not in standard}
        mail: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for name, header_value in self.check.headers(custom).items():
            key = name.lower()
            if key in _EXCLUSIVE_HEADERS:
                self.exclusive.add(f"headers.{name}")
            elif key == METADATA_HEADER.lower():
                metadata = _metadata(header_value)
            elif key != IDEMPOTENCY_HEADER.lower():
                mail[name] = header_value
        return mail, metadata

    def attachments(self, value: object) -> tuple[Attachment, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(INVALID, "attachment must be an array")
            return ()
        found = (self.attachment(item, f"attachment[{i}]") for i, item in enumerate(value))
        return tuple(attachment for attachment in found if attachment is not None)

    def attachment(self, value: object, path: str) -> Attachment | None:
        fields = present(value) if isinstance(value, dict) else {}
        if "content" not in fields and "url" not in fields:
            self.fail(INVALID, "attachment needs a url or a content")
            return None
        self.unknown(fields, _ATTACHMENT_FIELDS, "attachment.")
        if "url" in fields:
            self.exclusive.add("attachment.url")
            self.check.string(fields["url"], f"{path}.url", header=True)
            if "content" not in fields:
                self.check.string(fields.get("name"), f"{path}.name", header=True)
                return None
        if "name" not in fields:
            self.fail("required", "attachment name is missing")
            return None
        filename = self.check.filename(fields["name"], f"{path}.name")
        content = self.check.string(fields["content"], f"{path}.content", nullable=False)
        decoded = self.check.base64(content, f"{path}.content")
        if filename is None or decoded is None:
            return None
        _, dot, extension = filename.rpartition(".")
        if not dot or extension.lower() not in ALLOWED_EXTENSIONS:
            self.fail(INVALID, f"attachment {filename!r}: this file extension is not supported")
            return None
        content_type = self.check.content_type(None, filename, path)
        return Attachment(filename, decoded, content_type)

    def tags(self, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(INVALID, "tags must be an array of strings")
            return ()
        found = (
            self.check.string(tag, f"tags[{i}]", header=True, nullable=False)
            for i, tag in enumerate(value)
        )
        return tuple(tag for tag in found if tag is not None)


def _metadata(value: str) -> dict[str, str]:
    """`X-Mailin-custom` as metadata: a JSON object's members, else the string whole."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and document:
        members = {
            key: item if isinstance(item, str) else orjson.dumps(item).decode()
            for key, item in document.items()
        }
        if not any(has_line_break(k) or has_line_break(v) for k, v in members.items()):
            return members
    return {METADATA_HEADER: value}


def present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are not null: brevo-python sends None as null."""
    return {name: value for name, value in fields.items() if value is not None}


def given(value: object) -> bool:
    """A value that asks for something: not null and not empty."""
    return value is not None and value not in ("", [], {})
