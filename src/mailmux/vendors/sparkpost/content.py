"""The `content` object of a SparkPost transmission read into a Message without recipients.

SparkPost's content is inline (from, subject, bodies, headers, attachments,
inline images), a stored template (`template_id`, `ab_test_id`: exclusive), or
raw MIME (`email_rfc822`, which excludes every other content field). The CC
header is taken out of `content.headers` as the addresses it shows: a Message
has them as `cc`. Headers mailmux writes itself (Message-ID, Date, ...) are
exclusive rather than refused: SparkPost accepts them, only a translation
could not carry them. `rendered` collects the text SparkPost's template engine
reads, for the `{{` rule of `transmission`.
"""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from mailmux.addresses import AddressError, clean_name, has_line_break, normalize
from mailmux.message import (
    RESERVED_HEADERS,
    Address,
    Attachment,
    Message,
    MessageLimits,
    parts_size,
    safe_filename,
)
from mailmux.native import JsonChecker

#: The sender of a message whose content is a stored template (never sent by another ESP).
STORED_SENDER = Address("stored-template@sparkpost.invalid")
_CONTENT_PARTS = ("from", "subject", "text", "html", "reply_to", "headers", "attachments")
_STORED_CONTENT = ("template_id", "ab_test_id")
_KNOWN_CONTENT = frozenset(
    {*_CONTENT_PARTS, *_STORED_CONTENT, "inline_images", "email_rfc822", "amp_html"}
    | {"use_draft_template"}
)


class ContentReader:
    """Reads content fields, collecting problems in `check` and SparkPost-only fields in
    `exclusive`; `transmission` builds on it for the rest of the request."""

    def __init__(self, limits: MessageLimits, now: float) -> None:
        self.check = JsonChecker(limits)
        self.now = now
        self.exclusive: set[str] = set()
        self.rendered: list[str] = []  # text SparkPost's template engine would read

    def content(self, content: object) -> Message | None:
        """The content as a Message without recipients (raw MIME parsed when given)."""
        check = self.check
        if not isinstance(content, dict):
            if content is None:
                check.fail("content", "required", "content object or template_id required")
            else:
                check.wrong_type("content", content, "an object")
            return None
        for key, value in content.items():
            if value is not None and key not in _KNOWN_CONTENT:
                self.exclusive.add(f"content.{key}")
        if content.get("email_rfc822") is not None:
            return self._rfc822(content)
        stored = [k for k in _STORED_CONTENT if content.get(k) not in (None, "")]
        for key in stored:
            self.exclusive.add(f"content.{key}")
        if content.get("use_draft_template"):
            self.exclusive.add("content.use_draft_template")
        if content.get("amp_html") not in (None, ""):
            self.exclusive.add("content.amp_html")
        subject = check.string(content.get("subject"), "content.subject", header=True) or ""
        text = check.string(content.get("text"), "content.text") or None
        html = check.string(content.get("html"), "content.html") or None
        amp = check.string(content.get("amp_html"), "content.amp_html")
        self.rendered += [subject, text or "", html or "", amp or ""]
        sender = self._sender(content.get("from"))
        if not stored:
            if content.get("from") is None:
                check.fail("content.from", "required", "content.from is a required field")
            if content.get("subject") is None:
                check.fail("content.subject", "required", "content.subject is a required field")
            if not (text or html):
                check.fail("content", "required", "content.text or content.html is required")
        reply_to = self._reply_to(content.get("reply_to"))
        headers, cc = self._headers(content.get("headers"))
        attachments = self._parts(content.get("attachments"), "content.attachments", inline=False)
        images = self._parts(content.get("inline_images"), "content.inline_images", inline=True)
        if images and not html and not stored:
            check.fail(
                "content.inline_images", "required", "content.inline_images requires content.html"
            )
        parts = (*attachments, *images)
        size = parts_size((*cc, *reply_to), subject, text, html, headers, parts)
        if size > check.limits.max_message_bytes:
            limit = check.limits.max_message_bytes
            check.fail("content", "too_large", f"the message is {size} bytes; the limit is {limit}")
        return Message(
            sender or STORED_SENDER,
            (),
            cc,
            reply_to=reply_to,
            subject=subject,
            text=text,
            html=html,
            headers=headers,
            attachments=parts,
        )

    def _rfc822(self, content: dict[str, Any]) -> Message | None:
        check = self.check
        others = [k for k in (*_CONTENT_PARTS, *_STORED_CONTENT, "inline_images") if content.get(k)]
        for key in others:
            check.fail(
                f"content.{key}",
                "mutually_exclusive",
                f"content.email_rfc822 and content.{key} are mutually exclusive",
            )
        raw = content["email_rfc822"]
        if not isinstance(raw, str) or not raw:
            check.fail("content.email_rfc822", "invalid_type", "content.email_rfc822 is empty")
            return None
        # Parsed with its envelope once the recipients are known (`_raw_read`).
        return Message(STORED_SENDER, (), raw_mime=raw.encode())

    def _sender(self, value: object) -> Address | None:
        if value is None:
            return None
        if isinstance(value, str):
            sender = self.check.mailbox(value, "content.from")
        elif isinstance(value, dict):
            sender = self.address(value, "content.from")
        else:
            self.check.wrong_type("content.from", value, 'an address or {"email", "name"}')
            return None
        if sender is not None and sender.name:
            self.rendered.append(sender.name)
        return sender

    def _reply_to(self, value: object) -> tuple[Address, ...]:
        text = self.check.string(value, "content.reply_to", header=True)
        if not text:
            return ()
        self.rendered.append(text)
        return self.header_addresses(text, "content.reply_to")

    def header_addresses(self, text: str, path: str) -> tuple[Address, ...]:
        found: list[Address] = []
        for name, addr in getaddresses([text]):
            try:
                found.append(Address(normalize(addr), clean_name(name)))
            except AddressError as err:
                self.check.fail(path, err.code, err.reason)
        return tuple(found)

    def _headers(self, value: object) -> tuple[dict[str, str], tuple[Address, ...]]:
        """The custom headers (CC taken out as the addresses it shows)."""
        if not isinstance(value, dict):
            return self.check.headers(value, at="content.headers"), ()
        cc: tuple[Address, ...] = ()
        custom: dict[str, object] = {}
        for name, raw in value.items():
            path = f"content.headers.{name}"
            if name.lower() == "cc":
                text = self.check.string(raw, path, header=True, nullable=False)
                cc = self.header_addresses(text, path) if text else ()
            elif name.lower() in RESERVED_HEADERS and not has_line_break(name):
                if self.check.string(raw, path, header=True, nullable=False) is not None:
                    self.exclusive.add(path)
            else:
                custom[name] = raw
        headers = self.check.headers(custom, at="content.headers")
        self.rendered += [*headers, *headers.values()]
        return headers, cc

    def _parts(self, value: object, path: str, *, inline: bool) -> list[Attachment]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.check.wrong_type(path, value, "an array of objects")
            return []
        found = (self._part(item, f"{path}[{i}]", inline) for i, item in enumerate(value))
        return [part for part in found if part is not None]

    def _part(self, item: object, path: str, inline: bool) -> Attachment | None:
        check = self.check
        if not isinstance(item, dict):
            check.wrong_type(path, item, "an object with name, type and data")
            return None
        before = len(check.errors)
        for key in ("name", "type", "data"):
            if item.get(key) in (None, ""):
                check.fail(f"{path}.{key}", "required", f"{path}.{key} is a required field")
        name = item.get("name")
        if inline:
            cid = check.content_id(name, f"{path}.name") if name else None
            filename = safe_filename(cid or "") or "inline"
        else:
            cid = None
            filename = (check.filename(name, f"{path}.name") if name else None) or ""
        content_type = check.content_type(item.get("type"), filename, path)
        data = item.get("data")
        content = check.base64(check.string(data, f"{path}.data"), f"{path}.data")
        if len(check.errors) > before or content is None:
            return None
        return Attachment(filename, content, content_type, inline, cid)

    def address(self, value: dict[str, Any], path: str) -> Address | None:
        """An `{"email", "name"}` object (SparkPost's sender and recipient address)."""
        if value.get("email") is None:
            self.check.fail(f"{path}.email", "required", f"{path}.email is a required field")
        email = self.check.string(value.get("email"), f"{path}.email")
        name = self.check.string(value.get("name"), f"{path}.name", header=True)
        if email is None:
            return None
        try:
            return Address(normalize(email), None if name is None else clean_name(name))
        except AddressError as err:
            self.check.fail(path, err.code, f"invalid address: {err.reason}")
            return None
