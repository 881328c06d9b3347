"""The native JSON API body (`POST /v1/messages`) validated into a Message.

The JSON shapes live here, apart from the Message itself, because only this
ingress meets them: an address as a string or an `{"email", "name"}` object,
headers as an object, attachments as base64, unknown fields answered with the
field probably meant. The rules every ingress shares (header injection,
traffic class, deadline, sizes) come from `mailmux.message.Checker`.

A native message needs at least one recipient over to/cc/bcc (`to` may be
empty when everything is bcc) and a non-empty `text` or `html`, as every ESP
does.
"""

from __future__ import annotations

import binascii
import difflib
import mimetypes
import re
from collections.abc import Mapping

from mailmux.addresses import AddressError, clean_name, has_line_break, normalize
from mailmux.message import (
    DEFAULT_LIMITS,
    RESERVED_HEADERS,
    Address,
    Attachment,
    Checker,
    InvalidMessage,
    Message,
    MessageLimits,
    parts_size,
)

_NATIVE_FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers"}
    | {"attachments", "tags", "metadata", "class", "deadline"}
)
_ATTACHMENT_FIELDS = frozenset({"filename", "content", "content_type", "inline", "content_id"})
_ADDRESS_FIELDS = frozenset({"email", "name"})
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_TOKEN = r"[a-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")
_IDEMPOTENCY_KEY = re.compile(r"[ -~]{1,256}")


def parse_native(
    payload: object,
    *,
    now: float,
    limits: MessageLimits = DEFAULT_LIMITS,
    idempotency_key: str | None = None,
) -> Message:
    """Validate a decoded `POST /v1/messages` body (see DESIGN.md "Native API").

    `now` (epoch seconds) anchors a relative deadline and decides whether one has passed.
    Raises InvalidMessage listing every problem.
    """
    check = JsonChecker(limits)
    if not isinstance(payload, dict):
        check.wrong_type("", payload, "an object")
        raise InvalidMessage(check.errors)
    check.unknown(payload, _NATIVE_FIELDS, "")
    get = payload.get
    sender = None if get("from") is None else check.address(get("from"), "from")
    if get("from") is None:
        check.fail("from", "required", "a sender address is required")
    to, cc, bcc = (check.addresses(get(key), key) for key in ("to", "cc", "bcc"))
    if not (get("to") or get("cc") or get("bcc")):
        check.fail("to", "required", "at least one recipient is required in to, cc or bcc")
    check.recipients(len(to) + len(cc) + len(bcc))
    reply_to = check.addresses(get("reply_to"), "reply_to")
    subject = check.string(get("subject"), "subject", header=True) or ""
    text = check.string(get("text"), "text") or None
    html = check.string(get("html"), "html") or None
    if not (get("text") or get("html")):
        check.fail("text", "required", "a body is required: text, html or both")
    headers = check.headers(get("headers"))
    attachments: list[Attachment] = []
    if isinstance(items := get("attachments"), list):
        found = (check.attachment(a, f"attachments[{i}]") for i, a in enumerate(items))
        attachments = [a for a in found if a is not None]
    elif items is not None:
        check.wrong_type("attachments", items, "an array of attachment objects")
    tags = _string_list(check, get("tags"), "tags")
    metadata = _string_map(check, get("metadata"), "metadata")
    traffic_class = check.traffic_class(get("class"), "class")
    deadline = check.deadline(get("deadline"), "deadline", now)
    if idempotency_key is not None and not valid_idempotency_key(idempotency_key):
        check.fail(
            "idempotency_key",
            "invalid_idempotency_key",
            "must be 1 to 256 printable ASCII characters",
        )
    shown = (*((sender,) if sender else ()), *to, *cc, *reply_to)
    size = parts_size(shown, subject, text, html, headers, attachments)
    if size > limits.max_message_bytes:
        check.fail(
            "", "too_large", f"the message is {size} bytes; the limit is {limits.max_message_bytes}"
        )
    if check.errors or sender is None:
        raise InvalidMessage(check.errors)
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
        tags,
        metadata,
        traffic_class,
        deadline,
        idempotency_key,
    )


def valid_idempotency_key(key: str) -> bool:
    """An Idempotency-Key mailmux takes: 1 to 256 printable ASCII characters."""
    return _IDEMPOTENCY_KEY.fullmatch(key) is not None


def _string_list(check: Checker, value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        check.wrong_type(path, value, "an array of strings")
        return ()
    found = (
        check.string(v, f"{path}[{i}]", header=True, nullable=False) for i, v in enumerate(value)
    )
    return tuple(v for v in found if v is not None)


def _string_map(check: Checker, value: object, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        check.wrong_type(path, value, "an object of strings")
        return {}
    found = (
        (
            check.string(k, f"{path}.{k!r}", header=True),
            check.string(v, f"{path}.{k}", header=True, nullable=False),
        )
        for k, v in value.items()
    )
    return {k: v for k, v in found if k is not None and v is not None}


class JsonChecker(Checker):
    """The shared field rules plus the JSON shapes of the native API.

    The vendor-shaped ingress reuses its pieces (a headers object, base64
    content, a content type, an address) where an ESP's JSON has the same shape.
    """

    __slots__ = ()

    def unknown(self, obj: Mapping[str, object], allowed: frozenset[str], prefix: str) -> None:
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                path = f"{prefix}.{key}" if prefix else key
                self.fail(path, "unknown_field", f"unknown field {key!r}{hint}")

    def required(self, obj: Mapping[str, object], key: str, path: str) -> str | None:
        if obj.get(key) is None:
            self.fail(f"{path}.{key}", "required", f"{key} is required")
            return None
        return self.string(obj[key], f"{path}.{key}")

    def address(self, value: object, path: str) -> Address | None:
        if isinstance(value, str):
            return self.mailbox(value, path)
        if not isinstance(value, dict):
            self.wrong_type(path, value, 'an address ("Name <addr>" or {"email", "name"})')
            return None
        self.unknown(value, _ADDRESS_FIELDS, path)
        addr = self.required(value, "email", path)
        name = self.string(value.get("name"), f"{path}.name")
        if addr is None:
            return None
        try:
            return Address(normalize(addr), None if name is None else clean_name(name))
        except AddressError as err:
            self.fail(path, err.code, err.reason)
            return None

    def addresses(self, value: object, path: str) -> tuple[Address, ...]:
        if value is None:
            return ()
        if isinstance(value, list):
            found = [self.address(item, f"{path}[{i}]") for i, item in enumerate(value)]
        elif isinstance(value, str | dict):
            found = [self.address(value, path)]
        else:
            self.wrong_type(path, value, "an address or an array of addresses")
            return ()
        return tuple(a for a in found if a is not None)

    def headers(self, value: object, at: str = "headers") -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.wrong_type(at, value, "an object of header names to values")
            return {}
        headers: dict[str, str] = {}
        seen: set[str] = set()
        for name, raw in value.items():
            path, key = f"{at}.{name}", name.lower()
            if has_line_break(name):
                path, problem = f"{at}.{name!r}", ("header_injection", "contains a line break")
            elif not _HEADER_NAME.fullmatch(name):
                problem = ("invalid_header_name", "is not a header name (printable ASCII, no ':')")
            elif key in RESERVED_HEADERS:
                problem = ("reserved_header", "is written by mailmux and cannot be set")
            elif key in seen:
                problem = ("duplicate_header", "is given twice (names are case-insensitive)")
            else:
                problem = None
            if problem is not None:
                self.fail(path, problem[0], f"header name {name!r} {problem[1]}")
            text = self.string(raw, path, header=True, nullable=False)
            if problem is None and text is not None:
                headers[name] = text
                seen.add(key)
        return headers

    def attachment(self, item: object, path: str) -> Attachment | None:
        if not isinstance(item, dict):
            self.wrong_type(path, item, "an attachment object")
            return None
        before = len(self.errors)
        self.unknown(item, _ATTACHMENT_FIELDS, path)
        filename = None
        if item.get("filename") in (None, ""):
            self.fail(f"{path}.filename", "required", "an attachment needs a filename")
        else:
            filename = self.filename(item["filename"], f"{path}.filename")
        content = self.base64(self.required(item, "content", path), f"{path}.content")
        content_type = self.content_type(item.get("content_type"), filename or "", path)
        inline = item.get("inline", False)
        if not isinstance(inline, bool):
            self.wrong_type(f"{path}.inline", inline, "a boolean")
        content_id = self.content_id(item.get("content_id"), f"{path}.content_id")
        if inline is True and item.get("content_id") is None:
            self.fail(
                f"{path}.content_id",
                "required",
                "an inline attachment needs a content_id (the HTML refers to it as cid:…)",
            )
        if len(self.errors) > before or not filename or content is None:
            return None
        return Attachment(filename, content, content_type, inline is True, content_id)

    def base64(self, text: str | None, path: str) -> bytes | None:
        """Decoded straight from the JSON string: `binascii` reads an ASCII str in place,
        where `base64.b64decode` would first copy it into bytes."""
        if text is None:
            return None
        try:
            content = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):  # ValueError: not ASCII
            try:  # MIME-style line-wrapped base64 is common; only then pay for the copy
                content = binascii.a2b_base64("".join(text.split()), strict_mode=True)
            except (binascii.Error, ValueError):
                self.fail(path, "invalid_base64", "is not valid base64")
                return None
        self.attachment_size(len(content), path)
        return content

    def content_type(self, value: object, filename: str, path: str) -> str:
        if value is None:
            guessed, encoding = mimetypes.guess_type(filename)
            return guessed if guessed and encoding is None else "application/octet-stream"
        path = f"{path}.content_type"
        content_type = (self.string(value, path, header=True) or "").lower()
        if content_type.startswith("multipart/"):
            self.fail(path, "invalid_content_type", "a multipart type is not an attachment")
        elif _CONTENT_TYPE.fullmatch(content_type):
            return content_type
        elif isinstance(value, str) and not has_line_break(value):
            self.fail(
                path,
                "invalid_content_type",
                f"{value!r} is not a MIME type like image/png (no parameters)",
            )
        return "application/octet-stream"
