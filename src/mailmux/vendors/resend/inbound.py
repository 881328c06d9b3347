"""Resend's send API as mailmux serves it: `POST /emails` and `POST /emails/batch`.

The key is `Authorization: Bearer <key>`. `/emails` takes one email object,
`/emails/batch` a JSON array of 1 to 100; both become one Message per email.
A batch of one keeps its whole body (endpoint `batch`), so a Resend vendor is
handed the caller's own batch request and its answer fits the caller; each
email of a longer batch is narrowed to a `/emails` body of its own. The
answers are in `replies`.

What maps, and the choices made:

- from, to, cc, bcc, reply_to (a string or a list of strings), subject, html,
  text, headers and attachments (`content` as base64 or, as the Python SDK
  sends `list(bytes)`, a list of byte values) are the Message's fields; an
  attachment with a `content_id` (or its alias `inline_content_id`) is inline.
- `tags: [{name, value}]` become metadata (`name` → `value`): they are
  Resend's key/value data that comes back with events and look-ups, which is
  what metadata is. A tag without a value becomes a plain tag. That is the
  inverse of the Resend vendor, which writes a tag as `{name, value: "true"}`
  and metadata as `{name, value}`.
- Only Resend can carry `template`, `scheduled_at` (dropping it would send now
  what was meant for later), `topic_id`, an attachment's `path` (a URL Resend
  fetches; mailmux does not fetch URLs for callers), a tag name given twice,
  and any field mailmux does not know: such a message goes to Resend vendors
  only (`Original.exclusive`). `react` is dropped: the Node SDK renders it to
  `html` before sending, so it never means anything on the wire.
- Validation reports every problem; the answer names the first, in Resend's
  words where Resend has some (`replies.describe`). Resend refuses
  attachments in a batch, and so does this shape. A batch is all-or-nothing
  here even with `x-batch-validation: permissive`: an invalid email refuses
  the whole request (Resend's strict mode), so nothing is sent that the
  caller did not get an id for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from mailmux.message import (
    Address,
    Attachment,
    FieldError,
    Message,
    MessageLimits,
    Original,
    parts_size,
)
from mailmux.native import JsonChecker
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)
from mailmux.vendors.resend import replies

KIND = "resend"
ENDPOINTS = (Endpoint("emails", "POST", "/emails"), Endpoint("batch", "POST", "/emails/batch"))
MAX_TO = 50
MAX_BATCH = 100
_MODELLED = frozenset(
    {"from", "to", "cc", "bcc", "reply_to", "subject", "html", "text", "headers"}
    | {"attachments", "tags"}
)
_EXCLUSIVE = frozenset({"template", "scheduled_at", "topic_id"})
_DROPPED = frozenset({"react"})
_ATTACHMENT_FIELDS = frozenset({"content", "filename", "content_type", "content_id"})
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
_TAG_WORDS = "Tags should only contain ASCII letters, numbers, underscores, or dashes."


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of `Authorization: Bearer <key>`: None when there is no header, "" when
    it holds no Bearer key (a key no client has)."""
    authorization = headers.get("Authorization", "").strip()
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


class ResendInbound:
    """The Resend shape; stateless."""

    kind = KIND
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def credential(self, request: ShapeRequest) -> Credential | None:
        key = bearer_key(request.headers)
        return None if key is None else Credential(key)

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        del now  # Resend's fields carry no deadline
        try:
            document = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise ShapeError(Failure.INVALID_JSON, "The request body is not valid JSON.") from None
        content_type = request.headers.get("Content-Type", "application/json")
        check = JsonChecker(limits)
        if request.endpoint == "batch":
            emails = _batch(document, check)
        elif isinstance(document, dict):
            emails = [(0, document)]
        else:
            check.fail("", "validation_error", "The request body must be a JSON object.")
            emails = []
        batch = request.endpoint == "batch"
        read = [
            _Email(check, email, f"[{i}]." if batch else "", in_batch=batch).read()
            for i, email in emails
        ]
        if check.errors:
            first = check.errors[0]
            raise ShapeError(Failure.INVALID_REQUEST, replies.describe(first), check.errors)
        whole = len(emails) == 1
        messages = []
        for (_, email), (message, exclusive) in zip(emails, read, strict=True):
            assert message is not None  # no errors, so every email was read
            original = Original(
                KIND,
                request.endpoint if whole else "emails",
                request.body if whole else orjson.dumps(email),
                content_type,
                exclusive,
            )
            messages.append(replace(message, original=original))
        return messages

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        return replies.sent(request.endpoint, results)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        del endpoint  # both endpoints word their errors alike
        return replies.failure(failure, message, errors)


def _batch(document: object, check: JsonChecker) -> list[tuple[int, dict[str, Any]]]:
    """The batch's email objects with their index in the request."""
    if not isinstance(document, list) or not document:
        check.fail("", "validation_error", "The request body must be an array of 1 to 100 emails.")
        return []
    if len(document) > MAX_BATCH:
        check.fail("", "validation_error", f"A batch takes at most {MAX_BATCH} emails.")
        return []
    emails = []
    for index, email in enumerate(document):
        if isinstance(email, dict):
            emails.append((index, email))
        else:
            check.fail(f"[{index}]", "validation_error", f"The email at {index} must be an object.")
    return emails


class _Email:
    """One email object read into a Message (None if it had problems) and its exclusive
    fields; the problems go to the shared `check`."""

    def __init__(self, check: JsonChecker, email: dict[str, Any], at: str, *, in_batch: bool):
        self.check = check
        self.email = email
        self.at = at  # "" for /emails, "[2]." for a batch's third email
        self.in_batch = in_batch
        self.exclusive: list[str] = []

    def fail(self, field: str, name: str, words: str) -> None:
        where = f" (email {self.at[1:-2]})" if self.at else ""
        self.check.fail(f"{self.at}{field}", name, words + where)

    def read(self) -> tuple[Message | None, tuple[str, ...]]:
        check, get = self.check, self.email.get
        before = len(check.errors)
        for key, value in self.email.items():
            if value is not None and key not in _MODELLED and key not in _DROPPED:
                self.exclusive.append(key)
        template = get("template")
        if template is not None and not (
            isinstance(template, dict) and isinstance(template.get("id"), str)
        ):
            self.fail("template", "validation_error", "Invalid `template` field.")
        sender = self._sender(get("from"))
        to = self._addresses("to", required=True)
        cc, bcc, reply_to = (self._addresses(f) for f in ("cc", "bcc", "reply_to"))
        check.recipients(len(to) + len(cc) + len(bcc))
        subject = self._subject(get("subject"), templated=template is not None)
        html = check.string(get("html"), f"{self.at}html") or None
        text = check.string(get("text"), f"{self.at}text") or None
        if not (html or text or template is not None):
            self.fail("html", "validation_error", "Missing `html` or `text` field.")
        headers = self._headers(get("headers"))
        attachments = self._attachments(get("attachments"))
        tags, metadata = self._tags(get("tags"))
        shown = (*((sender,) if sender else ()), *to, *cc, *reply_to)
        size = parts_size(shown, subject, text, html, headers, attachments)
        if size > check.limits.max_message_bytes:
            limit = check.limits.max_message_bytes
            check.fail(self.at, "too_large", f"the email is {size} bytes; the limit is {limit}")
        if len(check.errors) > before or sender is None:
            return None, ()
        message = Message(
            sender, to, cc, bcc, reply_to, subject, text, html, headers,
            tuple(attachments), tags, metadata,
        )  # fmt: skip
        return message, tuple(self.exclusive)

    def _sender(self, value: object) -> Address | None:
        if value is None:
            self.fail("from", "missing_required_field", "Missing `from` field.")
            return None
        if not isinstance(value, str):
            self.fail("from", "validation_error", "Invalid `from` field.")
            return None
        return self.check.mailbox(value, f"{self.at}from")

    def _addresses(self, field: str, *, required: bool = False) -> tuple[Address, ...]:
        value = self.email.get(field)
        if value is None:
            if required:
                self.fail(field, "missing_required_field", f"Missing `{field}` field.")
            return ()
        items = [value] if isinstance(value, str) else value
        if not (isinstance(items, list) and all(isinstance(v, str) for v in items)) or (
            required and not items
        ):
            self.fail(field, "validation_error", f"Invalid `{field}` field.")
            return ()
        if field == "to" and len(items) > MAX_TO:
            self.fail(
                field, "validation_error", f"The `to` field takes at most {MAX_TO} addresses."
            )
            return ()
        single = isinstance(value, str)
        found = (
            self.check.mailbox(v, f"{self.at}{field}" if single else f"{self.at}{field}[{i}]")
            for i, v in enumerate(items)
        )
        return tuple(a for a in found if a is not None)

    def _subject(self, value: object, *, templated: bool) -> str:
        if value is None:
            if not templated:  # a template brings its own subject
                self.fail("subject", "missing_required_field", "Missing `subject` field.")
            return ""
        if not isinstance(value, str):
            self.fail("subject", "validation_error", "Invalid `subject` field.")
            return ""
        return self.check.string(value, f"{self.at}subject", header=True) or ""

    def _headers(self, value: object) -> dict[str, str]:
        if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
            self.fail("headers", "validation_error", "Header values must be strings.")
            return {}
        return self.check.headers(value, f"{self.at}headers")

    def _attachments(self, value: object) -> list[Attachment]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail("attachments", "validation_error", "Invalid `attachments` field.")
            return []
        if self.in_batch and value:
            words = "Attachments are not supported on the batch endpoint."
            self.fail("attachments", "validation_error", words)
            return []
        found = (self._attachment(item, f"attachments[{i}]") for i, item in enumerate(value))
        return [a for a in found if a is not None]

    def _attachment(self, item: object, path: str) -> Attachment | None:
        if not isinstance(item, dict):
            self.fail(path, "invalid_attachment", "Attachment must be an object.")
            return None
        check, at = self.check, f"{self.at}{path}"
        for key, field_value in item.items():
            known = key in _ATTACHMENT_FIELDS or key == "inline_content_id"
            if field_value is not None and not known:
                self.exclusive.append(f"{path}.{key}")  # `path`: a URL only Resend fetches
        content = item.get("content")
        if content is None:
            if not isinstance(item.get("path"), str) or not item["path"]:
                self.fail(
                    path, "invalid_attachment", "Attachment must have either a content or path."
                )
            return None  # fetched by Resend: nothing for the Message
        data = self._content(content, f"{path}.content")
        filename = None
        if item.get("filename") in (None, ""):
            self.fail(f"{path}.filename", "invalid_attachment", "Attachment needs a `filename`.")
        else:
            filename = check.filename(item["filename"], f"{at}.filename")
        content_type = check.content_type(item.get("content_type"), filename or "", at)
        raw_cid = item.get("content_id", item.get("inline_content_id"))
        content_id = None if raw_cid is None else check.content_id(raw_cid, f"{at}.content_id")
        if data is None or filename is None or (raw_cid is not None and content_id is None):
            return None
        return Attachment(filename, data, content_type, content_id is not None, content_id)

    def _content(self, content: object, path: str) -> bytes | None:
        """Base64 text, or the byte values the Python SDK sends for `list(bytes)`."""
        if isinstance(content, str):
            return self.check.base64(content, f"{self.at}{path}")
        if isinstance(content, list) and all(type(b) is int and 0 <= b <= 255 for b in content):
            data = bytes(content)
            self.check.attachment_size(len(data), f"{self.at}{path}")
            return data
        words = "Attachment content must be base64 or a list of bytes (0 to 255)."
        self.fail(path, "invalid_attachment", words)
        return None

    def _tags(self, value: object) -> tuple[tuple[str, ...], dict[str, str]]:
        """Tags with a value as metadata, tags without one as tags (see the module doc)."""
        if value is None:
            return (), {}
        if not isinstance(value, list):
            self.fail("tags", "validation_error", "Invalid `tags` field.")
            return (), {}
        tags: list[str] = []
        metadata: dict[str, str] = {}
        for index, tag in enumerate(value):
            name = tag.get("name") if isinstance(tag, dict) else None
            tag_value = tag.get("value") if isinstance(tag, dict) else None
            if not (_is_tag(name) and (tag_value is None or _is_tag(tag_value))):
                self.fail(f"tags[{index}]", "validation_error", _TAG_WORDS)
                continue
            assert isinstance(name, str)
            if name in metadata or name in tags:
                self.exclusive.append(f"tags[{index}]")  # a name twice: Resend keeps both
            elif tag_value is None:
                tags.append(name)
            else:
                metadata[name] = str(tag_value)
        return tuple(tags), metadata


def _is_tag(value: object) -> bool:
    return isinstance(value, str) and _TAG.fullmatch(value) is not None
