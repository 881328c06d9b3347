"""Brevo transactional email (`POST {base_url}/v3/smtp/email`): Message → request, answer → outcome.

Errors come as `{"code", "message"}` (codes from Brevo's own API definition:
`invalid_parameter`, `missing_parameter`, `not_enough_credits`,
`permission_denied`, `unauthorized`, `duplicate_parameter`, …):

======  ==============  ================================================================
status  outcome         why
======  ==============  ================================================================
2xx     accepted        201 sent (202 when scheduled); the id is `messageId` (a
                        Message-ID such as `<…@smtp-relay.mailin.fr>`), or the first of
                        `messageIds`.
400     permanent       The message is invalid (`invalid_parameter` "email is not valid
                        in to", `missing_parameter`…): sending it again fails again.
400     vendor_config   …except when Brevo blames the sender ("Sender is invalid /
                        inactive": not a validated sender of this account) or the
                        account (`unauthorized`, `permission_denied`,
                        `account_under_validation`, `reseller_permission_denied`).
400     ambiguous       `duplicate_parameter`: Brevo already took a request with this
                        message's idempotency key in the last 30 minutes and did not
                        process this one. That earlier attempt reached Brevo; whether
                        it was sent is unknown, which is exactly the ambiguous case.
402     rate_limited    Not enough credit (`not_enough_credits`, under any status):
                        reason says "quota"; another vendor can send meanwhile.
401     vendor_config   API key unknown, or the calling IP is not authorised.
403     vendor_config   Permission denied (SMTP account not activated, plan).
404     vendor_config   Wrong `base_url`.
405
406
3xx
429     rate_limited    Throttled. `retry_after` from `Retry-After` if present, else
                        from `x-sib-ratelimit-reset`: seconds until the window resets
                        (Brevo's "Rate limit headers").
5xx     retriable       Brevo's trouble.
other   retriable       Undocumented: never fails a message for good.
======  ==============  ================================================================

Field mapping and decisions:

- A message without To: Brevo requires `to`, at the top level or in every
  `messageVersions` entry, and versions are its way to send one message as
  copies that differ in recipients. So a bcc-only message is one version per
  bcc address with only that address as `to` (no top-level recipients; the
  idempotency key covers the whole batch): each copy shows only its own
  recipient, and Brevo answers a `messageIds` list, whose first is the vendor
  message id. Cc without To has no faithful form (a cc address as `to` would
  show it as To, and a version per address would hide the cc addresses from
  each other), so it is unsupported, with or without bcc.

- metadata → the `X-Mailin-custom` header, which Brevo returns in its webhooks:
  the metadata object as JSON with every non-ASCII character escaped (`\\u00eb`),
  because Brevo sends custom header values as raw 8-bit UTF-8; a JSON decoder on
  the webhook side gets the exact metadata back.
- `headers.idempotencyKey` (Brevo's "Batch email idempotency" guide: Brevo
  processes one request per key within 30 minutes) is derived from mailmux's
  message id, the same on every attempt and retry of one message, so a retry
  after an ambiguous attempt is not sent twice. Brevo asks for a UUID: the key is
  the UUIDv5 of the message id. The caller's own Idempotency-Key is mailmux's
  business, not Brevo's.
- Display names that are non-ASCII *and* contain an RFC 5322 special (`,` `;`
  `"` …) are sent RFC 2047-encoded: Brevo silently drops such names in
  sender/to/cc/bcc and sends them as 8-bit in replyTo (django-anymail's
  findings); encoded words arrive intact.
- Attachments carry no content type: Brevo derives it from the file name's
  extension, and accepts only the extensions in `ALLOWED_EXTENSIONS`.
- A Content-ID on a regular (non-inline) attachment is not carried; nothing can
  refer to a part that is not inline.
- Brevo has no tracking flags per message.

What Brevo cannot carry raises `UnsupportedFeature` before any request: raw
MIME without a parsed body, an empty subject, no text or HTML body, cc without
a To recipient, more than one reply-to address, inline attachments (Brevo has
no Content-ID support), an attachment whose extension Brevo refuses, a display
name over 70 characters as sent, a custom header value with non-ASCII
characters (Brevo sends it unencoded), a custom `idempotencyKey` header
(Brevo's idempotency key is mailmux's), and a custom `X-Mailin-custom` header
when the message's metadata needs that header.
"""

from __future__ import annotations

import email.charset
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
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

MAX_NAME_CHARS = 70
METADATA_HEADER = "X-Mailin-custom"
IDEMPOTENCY_HEADER = "idempotencyKey"
#: File extensions Brevo accepts for attachments (its API definition's list).
_EXTENSIONS = """
    xlsx xls ods docx docm doc csv pdf txt gif jpg jpeg png tif tiff rtf bmp cgm css shtml html
    htm zip xml ppt pptx tar ez ics mobi msg pub eps odt mp3 m4a m4v wma ogg flac wav aif aifc
    aiff mp4 mov avi mkv mpeg mpg wmv pkpass xlsm
"""
ALLOWED_EXTENSIONS = frozenset(_EXTENSIONS.split())
#: Error codes that blame the account rather than the message.
ACCOUNT_ERROR_CODES = frozenset(
    {"unauthorized", "permission_denied", "account_under_validation", "reseller_permission_denied"}
)
#: Namespace of the UUIDv5 that turns a message id into Brevo's idempotency key.
_KEY_NAMESPACE = uuid.UUID("6f2b0c3e-93c1-4b7e-9a54-1d3c8e0f5a27")
_SPECIALS = frozenset('()<>[]:;@\\,."')
_UTF8 = email.charset.Charset("utf-8")
_REASON_CHARS = 300


class BrevoVendor(HttpVendor):
    """A Brevo account; `base_url` may point at an emulator."""

    kind = "brevo"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        base_url: str = "https://api.brevo.com",
    ) -> None:
        super().__init__(name, transport)
        if not api_key:
            raise ValueError(f"vendor {name!r}: Brevo needs an api_key")
        self._url = base_url.rstrip("/") + "/v3/smtp/email"
        self._headers = {
            "api-key": api_key,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        #: Wall clock, for a Retry-After given as an HTTP date; tests replace it.
        self.clock: Callable[[], float] = time.time

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        body = json_body(_payload(message, message_id))
        return HttpRequest("POST", self._url, self._headers, body)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's sendTransacEmail body as it came, with this account's `api-key`.

        Brevo's idempotency key is a field of the body (`headers.idempotencyKey`),
        not a request header, so it is the caller's own when given: nothing is
        added to a body that goes out unchanged.
        """
        headers = {**self._headers, "Content-Type": original.content_type or "application/json"}
        return HttpRequest("POST", self._url, headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        data = _json(response.body)
        if 200 <= status < 300:
            return AttemptResult(
                Outcome.ACCEPTED, vendor_message_id=_message_id(data), status=status
            )
        code = data.get("code") if isinstance(data, dict) else None
        detail = _detail(status, data, response.body)
        if status == 402 or code == "not_enough_credits":
            return AttemptResult(
                Outcome.RATE_LIMITED,
                status=status,
                reason=f"quota: not enough Brevo credit: {detail}",
                retry_after=parse_retry_after(response.headers.get("retry-after"), self.clock()),
            )
        if status == 429:
            return AttemptResult(
                Outcome.RATE_LIMITED,
                status=status,
                reason=f"rate limited: {detail}",
                retry_after=self._retry_after(response),
            )
        if status == 400 and code == "duplicate_parameter":
            reason = f"idempotency key already used; an earlier attempt reached Brevo: {detail}"
            return AttemptResult(Outcome.AMBIGUOUS, status=status, reason=reason)
        if status == 400:
            if code in ACCOUNT_ERROR_CODES or "sender" in detail.lower():
                reason = f"sender or account refused: {detail}"
                return AttemptResult(Outcome.VENDOR_CONFIG, status=status, reason=reason)
            return AttemptResult(Outcome.PERMANENT, status=status, reason=detail)
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        return fallback_outcome(status, detail, _CONFIG_REASONS, retry_after)

    def _retry_after(self, response: HttpResponse) -> float | None:
        """`Retry-After`, else `x-sib-ratelimit-reset` (seconds until the window resets)."""
        return retry_after_from(
            response.headers, self.clock(), reset_header="x-sib-ratelimit-reset"
        )


_CONFIG_REASONS = {
    401: "API key rejected (unknown key, or a calling IP the account has not authorised)",
    403: "permission denied (account not activated or not allowed to send)",
    404: "not found; check base_url",
    405: "method not allowed; check base_url",
    406: "not acceptable; check base_url and proxies",
}


def _payload(message: Message, message_id: str) -> dict[str, Any]:
    """The sendTransacEmail body; empty fields are left out, never sent as empty values."""
    if message.raw_mime is not None and message.text is None and message.html is None:
        raise UnsupportedFeature("raw MIME: Brevo takes no raw message, and no body was parsed")
    if not message.subject:
        raise UnsupportedFeature("empty subject: Brevo requires one")
    if not message.text and not message.html:
        raise UnsupportedFeature("no text or HTML body: Brevo requires htmlContent or textContent")
    payload: dict[str, Any] = {"sender": _contact(message.sender), **_recipients(message)}
    if len(message.reply_to) > 1:
        raise UnsupportedFeature(
            f"{len(message.reply_to)} reply-to addresses; Brevo takes one replyTo"
        )
    if message.reply_to:
        payload["replyTo"] = _contact(message.reply_to[0])
    payload["subject"] = message.subject
    if message.html:
        payload["htmlContent"] = message.html
    if message.text:
        payload["textContent"] = message.text
    if message.attachments:
        payload["attachment"] = [_attachment(a) for a in message.attachments]
    payload["headers"] = _headers(message, message_id)
    if message.tags:
        payload["tags"] = list(dict.fromkeys(message.tags))
    return payload


def _recipients(message: Message) -> dict[str, Any]:
    """`to`, `cc` and `bcc`; for a bcc-only message, one version per recipient."""
    if not message.to:
        if message.cc:
            raise UnsupportedFeature(
                "cc without a To recipient: Brevo requires to in every message version,"
                " and a version per cc address would hide them from each other"
            )
        return {"messageVersions": [{"to": [_contact(a)]} for a in message.bcc]}
    recipients = {"to": [_contact(a) for a in message.to]}
    if message.cc:
        recipients["cc"] = [_contact(a) for a in message.cc]
    if message.bcc:
        recipients["bcc"] = [_contact(a) for a in message.bcc]
    return recipients


def _contact(address: Address) -> dict[str, str]:
    if not address.name:
        return {"email": address.email}
    name = address.name
    if not name.isascii() and _SPECIALS.intersection(name):
        name = _UTF8.header_encode(name)
    if len(name) > MAX_NAME_CHARS:
        raise UnsupportedFeature(
            f"display name {address.name[:20]!r}… is {len(name)} characters as sent;"
            f" Brevo takes at most {MAX_NAME_CHARS}"
        )
    return {"email": address.email, "name": name}


def _attachment(attachment: Attachment) -> AttachmentEntry:
    if attachment.inline:
        raise UnsupportedFeature(
            f"inline attachment {attachment.filename!r}: Brevo has no Content-ID (cid:) support"
        )
    _, dot, extension = attachment.filename.rpartition(".")
    if not dot or extension.lower() not in ALLOWED_EXTENSIONS:
        raise UnsupportedFeature(
            f"attachment {attachment.filename!r}: Brevo accepts only known file extensions"
            " (pdf, png, txt, …)"
        )
    return {
        "content": base64_text(attachment.content),
        "name": attachment.filename,
    }


def _headers(message: Message, message_id: str) -> dict[str, str]:
    headers = dict(message.headers)
    for name, value in headers.items():
        if not value.isascii():
            raise UnsupportedFeature(
                f"header {name}: non-ASCII value; Brevo sends custom header values unencoded"
            )
    taken = {name.lower() for name in headers}
    if message.metadata:
        if METADATA_HEADER.lower() in taken:
            raise UnsupportedFeature(
                f"header {METADATA_HEADER}: Brevo carries the metadata there; set one or the other"
            )
        # json (not orjson) for ensure_ascii: the header value must be 7-bit.
        headers[METADATA_HEADER] = json.dumps(dict(message.metadata), separators=(",", ":"))
    if IDEMPOTENCY_HEADER.lower() in taken:
        raise UnsupportedFeature(
            f"header {IDEMPOTENCY_HEADER}: Brevo carries mailmux's idempotency key there"
        )
    headers[IDEMPOTENCY_HEADER] = str(uuid.uuid5(_KEY_NAMESPACE, message_id))
    return headers


def _json(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _message_id(data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    single = data.get("messageId")
    if isinstance(single, str) and single:
        return single
    several: Sequence[object] = data.get("messageIds") or ()
    first = several[0] if isinstance(several, list) and several else None
    return first if isinstance(first, str) and first else None


def _detail(status: int, data: object, body: bytes) -> str:
    """Brevo's `code: message`, else a body excerpt, else the status phrase."""
    text = ""
    if isinstance(data, Mapping):
        message, code = data.get("message"), data.get("code")
        if isinstance(message, str):
            text = f"{code}: {message}" if isinstance(code, str) and code else message
    text = text or excerpt(body)
    if not text:
        try:
            text = HTTPStatus(status).phrase
        except ValueError:
            text = f"HTTP {status}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
