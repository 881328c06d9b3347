"""SendGrid v3 Mail Send (`POST {base_url}/v3/mail/send`): Message → request, answer → outcome.

How SendGrid's answers are classified, and why:

======  ==============  ================================================================
status  outcome         why
======  ==============  ================================================================
2xx     accepted        SendGrid queued it (202, empty body); the id is the
                        `X-Message-Id` header, one per request.
400     permanent       SendGrid found the message invalid; sending it again as-is
                        fails again, and it says nothing about SendGrid's health.
413     permanent       Too large for SendGrid (30 MB); the message must change.
401     vendor_config   The API key is wrong or revoked: every message would fail.
403     vendor_config   Sender identity not verified, key without the mail.send
                        scope, or a temporary block after repeated bad requests —
                        all about the account, none about the message.
404     vendor_config   Wrong `base_url` (or a proxy in the way): fix the
405                     configuration; the message is fine.
406
451     vendor_config   Data residency: the key belongs to a regional (EU) account
                        used on the wrong host; every message would fail the same
                        way while another vendor could send it, so it is not the
                        message's fault (not permanent).
429     rate_limited    Throttled. `retry_after` from `Retry-After`, else from
                        `X-RateLimit-Reset` (epoch seconds).
3xx     vendor_config   A redirect that was not followed: `base_url` points at the
                        wrong place.
5xx     retriable       SendGrid's trouble (SendGrid says 500 and 503 are
                        retriable); `Retry-After` is kept when given.
other   retriable       An undocumented status says nothing certain about the
                        message, so it must not fail it for good: another vendor
                        tries, and health counts it against SendGrid.
======  ==============  ================================================================

A message without To: SendGrid requires a `to` in every personalization, and its
own way to keep recipients from seeing each other is one personalization per
recipient. So a bcc-only message becomes one personalization per bcc address,
with that address as its `to`: each copy shows only its own recipient, in its
To header, and no header names another. Cc without To has no faithful form (a
cc address as `to` would show it as To, and a copy per address would hide the
cc addresses from each other), so it is unsupported, with or without bcc.

What SendGrid cannot carry raises `UnsupportedFeature` before any request:
raw MIME without a parsed body, an empty subject or body (SendGrid requires
both unless a template provides them), cc without a To recipient, more than
1000 recipients, an address twice among to/cc/bcc, more than 10 distinct tags
or a tag over 255 characters, metadata of 10,000 bytes or more, a header
SendGrid reserves, an empty attachment, and a request over 30 MB. SendGrid's
Mail Send takes no idempotency key: neither the message id nor the caller's
key is sent, and a retry after an ambiguous attempt may be sent twice.

Display names in to/cc/bcc that contain `,` or `;` are sent double-quoted:
SendGrid builds those headers without quoting and would split the name into
bogus addresses (sendgrid/sendgrid-python#291), while quoted names arrive
intact. The sender and reply-to names are sent as they are: SendGrid quotes
those itself, and quoting them again would show the quotes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson

from mailmux.message import Address, Attachment, Message, Original
from mailmux.vendors.base import (
    AttemptResult,
    HttpRequest,
    HttpResponse,
    HttpVendor,
    Outcome,
    Transport,
    UnsupportedFeature,
    excerpt,
    fallback_outcome,
    parse_retry_after,
    retry_after_from,
)
from mailmux.vendors.body import AttachmentEntry, base64_text, json_body

MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CATEGORY_CHARS = 255
MAX_CUSTOM_ARGS_BYTES = 10_000  # the encoded metadata must stay below this
MAX_REQUEST_BYTES = 30 * 1024 * 1024
#: Headers SendGrid will not let a request set (lower-cased).
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
_REASON_CHARS = 300


class SendGridVendor(HttpVendor):
    """A SendGrid account; `base_url` may point at a regional host or an emulator."""

    kind = "sendgrid"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        base_url: str = "https://api.sendgrid.com",
    ) -> None:
        super().__init__(name, transport)
        if not api_key:
            raise ValueError(f"vendor {name!r}: SendGrid needs an api_key")
        self._url = base_url.rstrip("/") + "/v3/mail/send"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",  # SendGrid answers 406 without it
        }
        #: Wall clock (X-RateLimit-Reset is an epoch second); tests replace it.
        self.clock: Callable[[], float] = time.time

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        body = json_body(_payload(message))
        if len(body) > MAX_REQUEST_BYTES:
            raise UnsupportedFeature(
                f"request of {len(body) / 2**20:.1f} MB; SendGrid takes at most 30 MB"
            )
        return HttpRequest("POST", self._url, self._headers, body)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        return HttpRequest("POST", self._url, self._headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        if 200 <= status < 300:
            message_id = response.headers.get("x-message-id") or None
            return AttemptResult(Outcome.ACCEPTED, vendor_message_id=message_id, status=status)
        detail = _detail(response)
        if status in (400, 413):
            return AttemptResult(Outcome.PERMANENT, status=status, reason=detail)
        if status == 429:
            return AttemptResult(
                Outcome.RATE_LIMITED,
                status=status,
                reason=f"rate limited: {detail}",
                retry_after=self._retry_after(response),
            )
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        return fallback_outcome(status, detail, _CONFIG_REASONS, retry_after)

    def _retry_after(self, response: HttpResponse) -> float | None:
        return retry_after_from(
            response.headers,
            self.clock(),
            reset_header="x-ratelimit-reset",
            reset_is_epoch=True,
        )


_CONFIG_REASONS = {
    401: "API key rejected",
    403: (
        "forbidden (sender identity not verified, key lacks the mail.send scope,"
        " or a temporary block after repeated bad requests)"
    ),
    404: "not found; check base_url",
    405: "method not allowed; check base_url",
    406: "not acceptable; check base_url and proxies",
    451: "refused for data residency; a regional (EU) account must use its regional base_url",
}


def _payload(message: Message) -> dict[str, Any]:
    """The Mail Send body; empty fields are left out, never sent as empty values."""
    if message.raw_mime is not None and message.text is None and message.html is None:
        raise UnsupportedFeature("raw MIME: SendGrid takes no raw message, and no body was parsed")
    if not message.subject:
        raise UnsupportedFeature("empty subject: SendGrid requires one")
    content = [
        {"type": kind, "value": value}
        for kind, value in (("text/plain", message.text), ("text/html", message.html))
        if value
    ]
    if not content:
        raise UnsupportedFeature("no text or HTML body: SendGrid requires content")
    personalizations = _personalizations(message)
    if message.metadata:
        # Per personalization rather than top level: the same effect, and the official
        # schema types it as an object only here.
        custom_args = _custom_args(message.metadata)
        for personalization in personalizations:
            personalization["custom_args"] = custom_args
    payload: dict[str, Any] = {
        "personalizations": personalizations,
        "from": _address(message.sender),
        "subject": message.subject,
        "content": content,
    }
    if len(message.reply_to) == 1:
        payload["reply_to"] = _address(message.reply_to[0])
    elif message.reply_to:
        payload["reply_to_list"] = [_address(a) for a in message.reply_to]
    if message.attachments:
        payload["attachments"] = [_attachment(a) for a in message.attachments]
    if message.headers:
        payload["headers"] = _headers(message.headers)
    if message.tags:
        payload["categories"] = _categories(message.tags)
    return payload


def _personalizations(message: Message) -> list[dict[str, Any]]:
    """One personalization for a message with To; one per address for a bcc-only one."""
    _check_recipients(message)
    if not message.to:
        if message.cc:
            raise UnsupportedFeature(
                "cc without a To recipient: SendGrid requires a to in every personalization,"
                " and a copy for each cc address would hide them from each other"
            )
        return [{"to": _recipients((address,))} for address in message.bcc]
    personalization: dict[str, Any] = {"to": _recipients(message.to)}
    if message.cc:
        personalization["cc"] = _recipients(message.cc)
    if message.bcc:
        personalization["bcc"] = _recipients(message.bcc)
    return [personalization]


def _check_recipients(message: Message) -> None:
    everyone = (*message.to, *message.cc, *message.bcc)
    if len(everyone) > MAX_RECIPIENTS:
        raise UnsupportedFeature(
            f"{len(everyone)} recipients; SendGrid takes at most {MAX_RECIPIENTS} per request"
        )
    seen: set[str] = set()
    for address in everyone:
        key = address.email.casefold()
        if key in seen:
            raise UnsupportedFeature(
                f"{address.email} appears twice among to/cc/bcc; SendGrid rejects duplicates"
            )
        seen.add(key)


def _address(address: Address) -> dict[str, str]:
    if address.name:
        return {"email": address.email, "name": address.name}
    return {"email": address.email}


def _recipients(addresses: tuple[Address, ...]) -> list[dict[str, str]]:
    """to/cc/bcc objects, with `,`/`;` names quoted (see the module docstring)."""
    objects = []
    for address in addresses:
        entry = _address(address)
        name = address.name
        if name and ("," in name or ";" in name):
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            entry["name"] = f'"{escaped}"'
        objects.append(entry)
    return objects


def _attachment(attachment: Attachment) -> AttachmentEntry:
    if not attachment.content:
        raise UnsupportedFeature(f"empty attachment {attachment.filename!r}: SendGrid rejects it")
    entry: AttachmentEntry = {
        "content": base64_text(attachment.content),
        "filename": attachment.filename,
        "type": attachment.content_type,
        "disposition": "inline" if attachment.inline else "attachment",
    }
    if attachment.content_id:
        entry["content_id"] = attachment.content_id
    return entry


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    for name in headers:
        if name.lower() in RESERVED_HEADERS:
            raise UnsupportedFeature(f"header {name}: SendGrid does not let a request set it")
    return dict(headers)


def _categories(tags: tuple[str, ...]) -> list[str]:
    categories = list(dict.fromkeys(tags))  # SendGrid wants them unique; order kept
    if len(categories) > MAX_CATEGORIES:
        raise UnsupportedFeature(
            f"{len(categories)} tags; SendGrid takes at most {MAX_CATEGORIES} categories"
        )
    for tag in categories:
        if len(tag) > MAX_CATEGORY_CHARS:
            raise UnsupportedFeature(
                f"tag {tag[:20]!r}… is {len(tag)} characters;"
                f" SendGrid categories take at most {MAX_CATEGORY_CHARS}"
            )
    return categories


def _custom_args(metadata: Mapping[str, str]) -> dict[str, str]:
    args = dict(metadata)
    size = len(orjson.dumps(args))
    if size >= MAX_CUSTOM_ARGS_BYTES:
        raise UnsupportedFeature(
            f"metadata of {size} bytes; SendGrid takes custom_args under"
            f" {MAX_CUSTOM_ARGS_BYTES} bytes"
        )
    return args


def _detail(response: HttpResponse) -> str:
    """SendGrid's own error text (`field: message; …`), else a body excerpt, else the phrase."""
    try:
        data = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        data = None
    parts = []
    errors = data.get("errors") if isinstance(data, dict) else None
    for error in errors if isinstance(errors, list) else ():
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            field = error.get("field")
            parts.append(f"{field}: {error['message']}" if field else error["message"])
    text = "; ".join(parts) or excerpt(response.body)
    if not text:
        try:
            text = HTTPStatus(response.status).phrase
        except ValueError:
            text = f"HTTP {response.status}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
