"""Brevo's `POST /v3/smtp/email` as mailmux serves it: the request in, Messages out.

A service using brevo-python points it at mailmux (`base_url=<mailmux>/v3`)
and keeps its `api-key` header, which holds a mailmux client key. Answers are
in `replies` (statuses chosen for how the SDK raises and retries).

Reading a request:

- brevo-python sends `null` for an argument given as None, so a null field is
  an absent one, at every level.
- `sender{email,name}`, `to`/`cc`/`bcc` arrays of `{email,name}`, `replyTo`,
  `subject`, `htmlContent`, `textContent`, `tags` and `attachment[{content,
  name}]` are carried. An attachment's content type comes from its extension,
  which must be one Brevo accepts. Brevo has no inline (Content-ID) images,
  so neither does this shape.
- `headers{}` become the message's custom headers, except three of Brevo's
  own: `X-Mailin-custom` is Brevo's metadata (a JSON object becomes the
  metadata; any other string is kept whole under the name `X-Mailin-custom`),
  `idempotencyKey` is Brevo's request key (not a mail header; a Brevo vendor
  gets it in the body it is handed, another ESP does not need it) and
  `X-Sib-Sandbox` is exclusive (below). A standard header Brevo is given
  (`Content-Type`, `Message-ID`, ...) is exclusive too: mailmux writes those
  itself for other ESPs.
- `messageVersions`: one Message per version, in order. A version's `to`
  replaces the top-level one (which Brevo ignores then); its cc, bcc,
  replyTo, subject and contents replace the top-level ones where given. Each
  Message's original is the request with that one version, so a Brevo vendor
  sends exactly it; a batch's `headers.idempotencyKey` is replaced there by a
  key derived from it and the version's index, or Brevo would refuse every
  version after the first as a duplicate.

Exclusive (only a Brevo vendor may carry the message; `Original.exclusive`
names them): `templateId`, `params` (also in a version), `scheduledAt`,
`batchId`, a sender chosen by `id`, an attachment by `url` (fetching a URL
for another ESP would be an SSRF hole), the `X-Sib-Sandbox` and `sender.ip`
headers, standard headers, and any field this module does not know (taken to
be Brevo's, not dropped). A message whose sender or contents a template gives
has an empty sender and body: no other ESP ever sees it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mailmux.addresses import AddressError, clean_name, has_line_break, normalize
from mailmux.message import (
    RESERVED_HEADERS,
    Address,
    Attachment,
    FieldError,
    Message,
    MessageLimits,
    Original,
    parts_size,
)
from mailmux.native import JsonChecker
from mailmux.vendors.brevo.outbound import ALLOWED_EXTENSIONS, IDEMPOTENCY_HEADER, METADATA_HEADER
from mailmux.vendors.brevo.replies import INVALID, failure_reply, success_reply
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)

ENDPOINT = "email"
ENDPOINTS = (Endpoint(ENDPOINT, "POST", "/v3/smtp/email"),)
#: The domain of the Message-IDs mailmux answers with: `<{mailmux id}@mailmux>`.
ID_DOMAIN = "mailmux"

_TOP_FIELDS = frozenset(
    {"sender", "to", "cc", "bcc", "replyTo", "subject", "htmlContent", "textContent"}
    | {"headers", "attachment", "tags", "templateId", "params", "scheduledAt", "batchId"}
    | {"messageVersions"}
)
_VERSION_FIELDS = frozenset(
    {"to", "cc", "bcc", "replyTo", "subject", "htmlContent", "textContent", "params"}
    | {"templateId"}
)
#: Top-level and version fields that only Brevo can carry.
_EXCLUSIVE_FIELDS = ("templateId", "params", "scheduledAt", "batchId")
_EXCLUSIVE_HEADERS = frozenset({"x-sib-sandbox", "sender.ip"})
_CONTACT_FIELDS = frozenset({"email", "name"})
_SENDER_FIELDS = frozenset({"email", "name", "id"})
_ATTACHMENT_FIELDS = frozenset({"content", "name", "url"})
#: Namespace of the UUIDv5 that gives each version of a batch its own idempotency key.
_VERSION_KEYS = uuid.UUID("0b7f2a55-6c1d-4e0a-9a8e-3f5d2c6b1e94")
_NO_SENDER = Address("")
_BAD_JSON = "Input must be a valid JSON object"


class BrevoInbound:
    """The Brevo shape (stateless): `id_domain` is where reply ids say they come from."""

    kind = "brevo"
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def __init__(self, id_domain: str = ID_DOMAIN) -> None:
        self.id_domain = id_domain

    def credential(self, request: ShapeRequest) -> Credential | None:
        key = request.headers.get("api-key", "").strip()
        return Credential(key) if key else None

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        content_type = request.headers.get("Content-Type", "application/json")
        return messages(decode(request.body), request.body, content_type, limits)

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        return success_reply(results, versions=None, id_domain=self.id_domain)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return failure_reply(failure, message, errors)


def decode(body: bytes) -> dict[str, Any]:
    """The request's JSON object; ShapeError INVALID_JSON when it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ShapeError(Failure.INVALID_JSON, _BAD_JSON) from None
    if not isinstance(document, dict):
        raise ShapeError(Failure.INVALID_JSON, _BAD_JSON)
    return document


def messages(
    document: Mapping[str, Any], body: bytes, content_type: str, limits: MessageLimits
) -> list[Message]:
    """One Message per email the request asks for (see the module docstring)."""
    reader = _Reader(limits)
    top = _present(document)
    reader.unknown(top, _TOP_FIELDS, "")
    reader.exclusive.update(name for name in _EXCLUSIVE_FIELDS if _given(top.get(name)))
    templated = "templateId" in top
    sender = reader.sender(top.get("sender"), required=not templated)
    headers, metadata = reader.headers(top.get("headers"))
    attachments = reader.attachments(top.get("attachment"))
    tags = reader.tags(top.get("tags"))
    shared = reader.parts(top, "")
    versions = top.get("messageVersions")
    if versions is None:
        plans: list[tuple[_Parts, bool, frozenset[str]]] = [(shared, templated, frozenset())]
    elif isinstance(versions, list) and versions and all(isinstance(v, dict) for v in versions):
        if "to" in top:
            reader.contacts(top["to"], "to")  # ignored by Brevo, still checked
        plans = [reader.version(shared, v, i, templated) for i, v in enumerate(versions)]
    else:
        reader.fail(INVALID, "messageVersions must be a non-empty array of objects")
        plans = []
    found: list[Message] = []
    for index, (parts, version_templated, version_exclusive) in enumerate(plans):
        where = "" if versions is None else f" in messageVersions[{index}]"
        asked = top if versions is None else _present(versions[index])
        if not asked.get("to"):
            reader.fail("required", f"to is missing{where}")
        if not version_templated:
            if not parts.subject:
                reader.fail("required", f"subject is missing{where}")
            if not (parts.html or parts.text):
                reader.fail("required", f"htmlContent or textContent is missing{where}")
        reader.check.recipients(len(parts.to) + len(parts.cc) + len(parts.bcc))
        shown = (*((sender,) if sender else ()), *parts.to, *parts.cc, *parts.reply_to)
        size = parts_size(shown, parts.subject, parts.text, parts.html, headers, attachments)
        if size > limits.max_message_bytes:
            limit = limits.max_message_bytes
            reader.check.fail("", "too_large", f"the message is {size} bytes; the limit is {limit}")
        if reader.check.errors:
            continue
        exclusive = tuple(sorted(reader.exclusive | version_exclusive))
        item_body = body if len(plans) == 1 else _narrowed(document, index)
        original = Original("brevo", ENDPOINT, item_body, content_type, exclusive)
        found.append(
            Message(
                sender or _NO_SENDER,
                parts.to,
                parts.cc,
                parts.bcc,
                parts.reply_to,
                parts.subject,
                parts.text or None,
                parts.html or None,
                headers,
                attachments,
                tags,
                metadata,
                original=original,
            )
        )
    if reader.check.errors:
        errors = reader.check.errors
        raise ShapeError(Failure.INVALID_REQUEST, str(errors[0]), errors)
    return found


def _narrowed(document: Mapping[str, Any], index: int) -> bytes:
    """The request with only version `index`, under that version's own idempotency key."""
    narrowed = dict(document)
    narrowed["messageVersions"] = [document["messageVersions"][index]]
    headers = narrowed.get("headers")
    if isinstance(headers, dict):
        for name, value in headers.items():
            if name.lower() == IDEMPOTENCY_HEADER.lower() and isinstance(value, str):
                key = str(uuid.uuid5(_VERSION_KEYS, f"{value}#{index}"))
                narrowed["headers"] = {**headers, name: key}
    return orjson.dumps(narrowed)


@dataclass(frozen=True, slots=True)
class _Parts:
    """What a version may replace: recipients, subject and contents."""

    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    text: str
    html: str


class _Reader:
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
        fields = _present(value)
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
        fields = _present(value)
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

    def parts(self, fields: Mapping[str, Any], where: str) -> _Parts:
        reply_to = fields.get("replyTo")
        replier = None if reply_to is None else self.contact(reply_to, f"replyTo{where}")
        return _Parts(
            to=self.contacts(fields.get("to"), f"to{where}"),
            cc=self.contacts(fields.get("cc"), f"cc{where}"),
            bcc=self.contacts(fields.get("bcc"), f"bcc{where}"),
            reply_to=() if replier is None else (replier,),
            subject=self.text(fields.get("subject"), f"subject{where}", header=True),
            text=self.text(fields.get("textContent"), f"textContent{where}"),
            html=self.text(fields.get("htmlContent"), f"htmlContent{where}"),
        )

    def version(
        self, shared: _Parts, value: Mapping[str, Any], index: int, templated: bool
    ) -> tuple[_Parts, bool, frozenset[str]]:
        """A version's parts over the shared ones, whether a template fills it, its exclusives."""
        fields = _present(value)
        own = self.parts(fields, f" in messageVersions[{index}]")
        parts = _Parts(
            to=own.to,
            cc=own.cc if "cc" in fields else shared.cc,
            bcc=own.bcc if "bcc" in fields else shared.bcc,
            reply_to=own.reply_to if "replyTo" in fields else shared.reply_to,
            subject=own.subject if "subject" in fields else shared.subject,
            text=own.text if "textContent" in fields else shared.text,
            html=own.html if "htmlContent" in fields else shared.html,
        )
        exclusive = {f"messageVersions.{name}" for name in fields if name not in _VERSION_FIELDS}
        asked = (name for name in ("params", "templateId") if _given(fields.get(name)))
        exclusive.update(f"messageVersions.{name}" for name in asked)
        return parts, templated or "templateId" in fields, frozenset(exclusive)

    def text(self, value: object, path: str, *, header: bool = False) -> str:
        return self.check.string(value, path, header=header) or ""

    def headers(self, value: object) -> tuple[dict[str, str], dict[str, str]]:
        """The mail headers and the metadata; Brevo's own headers are taken out."""
        if not isinstance(value, dict):
            return self.check.headers(value), {}
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
        fields = _present(value) if isinstance(value, dict) else {}
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


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are not null: brevo-python sends None as null."""
    return {name: value for name, value in fields.items() if value is not None}


def _given(value: object) -> bool:
    """A value that asks for something: not null and not empty."""
    return value is not None and value not in ("", [], {})
