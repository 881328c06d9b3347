"""SendGrid's Mail Send fields checked one by one, in SendGrid's paths and words.

Paths are SendGrid's dotted ones (`personalizations.0.to.1.email`), messages
SendGrid's own where they are known (its v3 error page and public reports);
the rest are mailmux's. The rules every ingress shares (header injection,
sizes, filenames, content ids) come from `Checker` through `JsonChecker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mailmux.addresses import AddressError, clean_name, normalize
from mailmux.message import Address, Attachment, Message, parts_size
from mailmux.native import JsonChecker
from mailmux.vendors.sendgrid.outbound import (
    MAX_CATEGORIES,
    MAX_CATEGORY_CHARS,
    MAX_CUSTOM_ARGS_BYTES,
)
from mailmux.vendors.sendgrid.outbound import RESERVED_HEADERS as SENDGRID_RESERVED

MAX_PERSONALIZATIONS = 1000
_FROM = (
    "The from object must be provided for every email send. It is an object that requires the"
    ' email parameter, but may also contain a name parameter.  e.g. {"email" :'
    ' "example@example.com"}  or {"email" : "example@example.com", "name" : "Example'
    ' Recipient"}.'
)
_PERSONALIZATIONS = (
    "The personalizations field is required and must have at least one personalization."
)
_TO = (
    "The to array is required for all personalization objects, and must have at least one"
    " email object with a valid email address."
)
SUBJECT_REQUIRED = (
    "The subject is required. You can get around this requirement if you use a template with"
    " a subject defined or if every personalization has a subject defined."
)
_CONTENT = (
    "Unless a valid template_id is provided, the content parameter is required. There must be"
    " at least one defined content block. We typically suggest both text/plain and text/html"
    " blocks are included, but only one block is required."
)
_CONTENT_VALUE = "The content value must be a string at least one character in length."
_INVALID_ADDRESS = "Does not contain a valid address."

_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "integer", bool: "boolean"}


@dataclass(frozen=True, slots=True)
class Personal:
    """What one personalization says for itself."""

    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    sender: Address | None
    subject: str | None
    headers: dict[str, str]
    metadata: dict[str, str]


def type_name(value: object) -> str:
    """A JSON value's type in the words of SendGrid's schema errors."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return "number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class MailSendChecker(JsonChecker):
    """The shared rules (`Checker`), plus SendGrid's shapes and words for each field."""

    __slots__ = ()

    def typed(self, value: object, path: str, types: tuple[type, ...]) -> bool:
        """Whether `value` (not None) has one of `types`; SendGrid's type error if not."""
        if value is None:
            return False
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return True
        expected = _TYPE_NAMES[types[0]]
        message = f"Invalid type. Expected: {expected}, given: {type_name(value)}."
        self.fail(path, "invalid_type", message)
        return False

    def email(self, value: object, path: str) -> Address | None:
        """An `{"email", "name"?}` object."""
        if type(value) is not dict and not self.typed(value, path, (dict,)):
            if value is None:
                self.fail(f"{path}.email", "invalid_address", _INVALID_ADDRESS)
            return None
        assert isinstance(value, dict)
        email, name = value.get("email"), value.get("name")
        if name is not None and not self.typed(name, f"{path}.name", (str,)):
            name = None
        if not isinstance(email, str) or not email:
            self.fail(f"{path}.email", "invalid_address", _INVALID_ADDRESS)
            return None
        try:
            address = normalize(email)
        except AddressError as err:
            message = _INVALID_ADDRESS if err.code == "invalid_address" else err.reason
            self.fail(f"{path}.email", err.code, message)
            return None
        try:
            return Address(address, None if name is None else clean_name(name))
        except AddressError as err:
            self.fail(f"{path}.name", err.code, err.reason)
            return None

    def sender(self, value: object, path: str, *, required: bool) -> Address | None:
        if value is None:
            if required:
                self.fail(f"{path}.email", "required", _FROM)
            return None
        if isinstance(value, dict) and not value.get("email"):
            self.fail(f"{path}.email", "required", _FROM)
            return None
        return self.email(value, path)

    def personalizations(self, value: object) -> list[dict[str, Any]]:
        if value is not None and not self.typed(value, "personalizations", (list,)):
            return []
        if not value:
            self.fail("personalizations", "required", _PERSONALIZATIONS)
            return []
        assert isinstance(value, list)
        if len(value) > MAX_PERSONALIZATIONS:
            self.fail(
                "personalizations",
                "too_many",
                f"The personalizations field may hold at most {MAX_PERSONALIZATIONS}"
                f" personalizations; this request has {len(value)}.",
            )
            return []
        items = []
        for index, item in enumerate(value):
            if self.typed(item, f"personalizations.{index}", (dict,)):
                items.append(item)
            elif item is None:
                self.fail(f"personalizations.{index}", "required", _TO)
        return items

    def personalization(self, item: Mapping[str, Any], at: str) -> Personal:
        to = self.recipients_of(item, at, "to")
        cc = self.recipients_of(item, at, "cc")
        bcc = self.recipients_of(item, at, "bcc")
        self.unique(at, (("to", to), ("cc", cc), ("bcc", bcc)))
        return Personal(
            to,
            cc,
            bcc,
            self.sender(item.get("from"), f"{at}.from", required=False),
            self.string(item.get("subject"), f"{at}.subject", header=True),
            self.sendgrid_headers(item.get("headers"), f"{at}.headers"),
            self.custom_args(item.get("custom_args"), f"{at}.custom_args"),
        )

    def recipients_of(self, item: Mapping[str, Any], at: str, key: str) -> tuple[Address, ...]:
        """`to`, `cc` or `bcc` of a personalization; `to` is required, null is never a list."""
        if key != "to" and key not in item:
            return ()
        path = f"{at}.{key}"
        value = item.get(key)
        if key == "to" and (not isinstance(value, list) or not value):
            if value is not None and not isinstance(value, list):
                self.typed(value, path, (list,))
            else:
                self.fail(path, "required", _TO)
            return ()
        if not self.typed(value, path, (list,)):
            if value is None:
                self.fail(path, "invalid_type", "Invalid type. Expected: array, given: null.")
            return ()
        assert isinstance(value, list)
        found = (self.email(entry, f"{path}.{i}") for i, entry in enumerate(value))
        return tuple(a for a in found if a is not None)

    def unique(self, at: str, lists: tuple[tuple[str, tuple[Address, ...]], ...]) -> None:
        seen: set[str] = set()
        for key, addresses in lists:
            for address in addresses:
                folded = address.email.casefold()
                if folded in seen:
                    self.fail(
                        at,
                        "duplicate_recipient",
                        "Each email address in the personalization block should be unique"
                        " between to, cc, and bcc. We found the first duplicate instance of"
                        f" [{address.email}] in the {at}.{key} field.",
                    )
                    return
                seen.add(folded)
        count = sum(len(addresses) for _, addresses in lists)
        if count > self.limits.max_recipients:
            self.fail(
                at,
                "too_many_recipients",
                f"{count} recipients over to, cc and bcc; the limit is"
                f" {self.limits.max_recipients}",
            )

    def content(self, value: object, template: bool) -> tuple[str | None, str | None, list[str]]:
        """(text, html, exclusive content types) of `content`; required without a template."""
        if value is not None and not self.typed(value, "content", (list,)):
            return None, None, []
        if not value:
            if not template:
                self.fail("content", "required", _CONTENT)
            return None, None, []
        assert isinstance(value, list)
        bodies: dict[str, str] = {}
        exclusive: list[str] = []
        for index, block in enumerate(value):
            path = f"content.{index}"
            if not self.typed(block, path, (dict,)):
                continue
            kind, text = block.get("type"), block.get("value")
            if not isinstance(kind, str) or not kind:
                message = "The content type must be a string at least one character in length."
                self.fail(f"{path}.type", "required", message)
            if not isinstance(text, str) or not text:
                self.fail(f"{path}.value", "required", _CONTENT_VALUE)
            if not isinstance(kind, str) or not isinstance(text, str):
                continue
            kind = kind.lower()
            if kind in ("text/plain", "text/html") and kind not in bodies:
                bodies[kind] = text
            else:  # AMP, calendar, a second block of a type: SendGrid's to interpret
                exclusive.append(f"content.{kind}")
        return bodies.get("text/plain"), bodies.get("text/html"), exclusive

    def sendgrid_headers(self, value: object, at: str) -> dict[str, str]:
        """Custom headers: the shared rules, and the names SendGrid reserves besides."""
        headers = self.headers(value, at)
        for name in [n for n in headers if n.lower() in SENDGRID_RESERVED]:
            self.fail(
                f"{at}.{name}", "reserved_header", f"The header {name} is reserved by SendGrid."
            )
            del headers[name]
        return headers

    def attachments(self, value: object) -> tuple[Attachment, ...]:
        if value is None or not self.typed(value, "attachments", (list,)):
            return ()
        assert isinstance(value, list)
        found = (self.attachment_object(item, f"attachments.{i}") for i, item in enumerate(value))
        return tuple(a for a in found if a is not None)

    def attachment_object(self, item: object, path: str) -> Attachment | None:
        """SendGrid's `{content, filename, type?, disposition?, content_id?}`."""
        if not self.typed(item, path, (dict,)):
            return None
        assert isinstance(item, dict)
        before = len(self.errors)
        filename = None
        if not item.get("filename"):
            self.fail(f"{path}.filename", "required", "The attachment filename is required.")
        else:
            filename = self.filename(item["filename"], f"{path}.filename")
        raw = item.get("content")
        content = None
        if not isinstance(raw, str) or not raw:
            message = "The attachment content must be a base64 string of at least one character."
            self.fail(f"{path}.content", "required", message)
        else:
            content = self.base64(raw, f"{path}.content")
        content_type = self.content_type(item.get("type"), filename or "", path)
        disposition = item.get("disposition", "attachment")
        if disposition not in ("attachment", "inline", None):
            message = "The disposition must be either inline or attachment."
            self.fail(f"{path}.disposition", "invalid_disposition", message)
        content_id = self.content_id(item.get("content_id"), f"{path}.content_id")
        inline = disposition == "inline"
        if inline and item.get("content_id") is None:
            message = "The content_id is required when the disposition is inline."
            self.fail(f"{path}.content_id", "required", message)
        if len(self.errors) > before or filename is None or content is None:
            return None
        return Attachment(filename, content, content_type, inline, content_id)

    def categories(self, value: object) -> tuple[str, ...]:
        if value is None or not self.typed(value, "categories", (list,)):
            return ()
        assert isinstance(value, list)
        found = [
            self.string(v, f"categories.{i}", header=True, nullable=False)
            for i, v in enumerate(value)
        ]
        tags = tuple(dict.fromkeys(t for t in found if t is not None))
        if len(tags) > MAX_CATEGORIES:
            message = f"You may not have more than {MAX_CATEGORIES} categories per request."
            self.fail("categories", "too_many", message)
        for index, tag in enumerate(tags):
            if len(tag) > MAX_CATEGORY_CHARS:
                message = f"A category may be at most {MAX_CATEGORY_CHARS} characters long."
                self.fail(f"categories.{index}", "invalid_category", message)
        return tags

    def custom_args(self, value: object, at: str) -> dict[str, str]:
        if value is None or not self.typed(value, at, (dict,)):
            return {}
        assert isinstance(value, dict)
        args = {}
        for key, raw in value.items():
            if not self.typed(raw, f"{at}.{key}", (str,)):
                if raw is None:
                    self.fail(
                        f"{at}.{key}",
                        "invalid_type",
                        "Invalid type. Expected: string, given: null.",
                    )
                continue
            name = self.string(key, f"{at}.{key!r}", header=True)
            text = self.string(raw, f"{at}.{key}", header=True)
            if name is not None and text is not None:
                args[name] = text
        return args

    def metadata_size(self, metadata: Mapping[str, str], path: str) -> None:
        if metadata and len(orjson.dumps(metadata)) >= MAX_CUSTOM_ARGS_BYTES:
            message = f"The custom_args must total less than {MAX_CUSTOM_ARGS_BYTES} bytes."
            self.fail(path, "too_large", message)

    def reply_to(self, single: object, many: object) -> tuple[Address, ...]:
        if single is not None and many is not None:
            message = "The reply_to and reply_to_list fields cannot be used together."
            self.fail("reply_to_list", "conflict", message)
            return ()
        if single is not None:
            address = self.email(single, "reply_to")
            return () if address is None else (address,)
        if many is None or not self.typed(many, "reply_to_list", (list,)):
            return ()
        assert isinstance(many, list)
        found = (self.email(item, f"reply_to_list.{i}") for i, item in enumerate(many))
        return tuple(a for a in found if a is not None)

    def size(self, message: Message, at: str) -> None:
        shown = (message.sender, *message.to, *message.cc, *message.reply_to)
        size = parts_size(
            shown, message.subject, message.text, message.html, message.headers, message.attachments
        )
        if size > self.limits.max_message_bytes:
            self.fail(
                at,
                "too_large",
                f"the message is {size} bytes; the limit is {self.limits.max_message_bytes}",
            )
