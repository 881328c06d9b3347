"""Mailjet Send API v3.1 (`POST {base_url}/v3.1/send`): Message → request, answer → outcome.

A request that came in Mailjet's own shape (`inbound`) is passed through:
its body unchanged, with this account's Basic credentials.

mailmux sends one message per request (`{"Messages": [one]}`), so the answer's
entry is the whole story — except for a bcc-only message, which goes as one
copy per recipient (below) and is answered with one entry per copy. Mailjet
reports errors two ways: a *global* error (`{ErrorIdentifier, ErrorCode,
StatusCode, ErrorMessage}`) for the call as a whole, or a *per-message* entry
`{"Status": "error", "Errors": [...]}` inside a 4xx (or, defensively, a 200)
body. Per-message errors are classified from their own codes, not from the
HTTP status alone:

======================  ==============  ==============================================
answer                  outcome         why
======================  ==============  ==============================================
2xx, Status "success"   accepted        The id is the first To recipient's
                                        `MessageUUID` (see below).
some copies "success",  accepted        A bcc-only message reached the recipients
others "error" (4xx)                    whose copies Mailjet took (it sends them
                                        whatever the HTTP status); the reason
                                        names the refused copies' errors.
send-0006/7/8, send-    vendor_config   The From address or SenderID is not validated
0010, mj-0001, mj-0015                  for this key, the template belongs to another
(any status), 401, 403                  account, or the key is suspended or wrong: the
                                        account's fault, not the message's.
other per-message       permanent       Mailjet validated the message and refused it
errors (StatusCode                      (invalid address mj-0013, no body send-0003,
400), global 400, 413                   too many recipients send-0015, payload over the
                                        limit mj-0011…): sending it again fails again.
429                     rate_limited    Per-key call rate exceeded; `Retry-After` is
                                        honoured when present (Mailjet documents none).
404, 405, 3xx           vendor_config   Wrong `base_url`.
5xx                     retriable       Mailjet's trouble (its 500 carries an
                                        ErrorIdentifier, kept in the reason).
other                   retriable       Undocumented: never fails a message for good.
======================  ==============  ==============================================

Field mapping and decisions:

- A message without To: Mailjet requires a non-empty `To` in every message
  (mj-0003, mj-0007), and its documented way to keep recipients from seeing
  each other is one message per recipient. So a bcc-only message goes as one
  `Messages` entry per bcc address with only that address as `To`, everything
  else once in `Globals` (as django-anymail sends every message): each copy
  shows only its own recipient. Cc without To has no faithful form (a cc
  address as `To` would show it as To, and a copy per address would hide the
  cc addresses from each other), so it is unsupported, with or without bcc.

- tags → `CustomCampaign`, which takes exactly one value (≤ 255 characters); it
  groups messages in Mailjet's statistics the way tags do elsewhere. A second
  distinct tag is unsupported. `CustomID` is left to the caller's Mailjet
  tooling: it is a per-message tracking id, not a category.
- metadata → `EventPayload`, a string Mailjet returns in every event: the
  metadata object JSON-encoded, so a webhook consumer decodes it back exactly.
- `Idempotency-Key` request header: mailmux's message id, the same on every
  attempt and retry of one message. Mailjet documents no deduplication (neither
  its Send API guide nor its error codes mention a key; its official SDK, 1.9.1,
  sends a payload hash under this name on every POST), so mailmux does not count
  on it: a retry after an ambiguous attempt may be sent twice. The header costs
  nothing and lets Mailjet drop the retry if it does honour it. The caller's own
  Idempotency-Key is mailmux's business, not Mailjet's.
- The vendor message id is `Messages[0].To[0].MessageUUID` (a string Mailjet
  also reports in events as `Message_GUID`); when it is empty (sandbox mode) the
  numeric `MessageID` is used, as a decimal string so that no JSON consumer loses
  precision on a 64-bit number.
- A Content-ID on a regular (non-inline) attachment is not carried: Mailjet's
  `Attachments` have no such field, and nothing can refer to a part that is not
  inline (mailmux's MIME parser treats such parts the same way).

What Mailjet cannot carry raises `UnsupportedFeature` before any request: raw
MIME without a parsed body, no text or HTML body, cc without a To recipient,
more than one reply-to
address, more than 50 recipients or 50 attachments (inline or not) or 50
custom headers, a custom header Mailjet reserves (its own `X-MJ-*` and
`X-Mailjet-*` control headers have message properties instead), an empty
attachment, more than one distinct tag, and a tag over 255 characters.
"""

from __future__ import annotations

import base64
import time
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
    parse_retry_after,
)
from mailmux.vendors.body import AttachmentEntry, base64_text, json_body

MAX_RECIPIENTS = 50
MAX_ITEMS = 50  # Mailjet's cap on each array (Attachments, InlinedAttachments) and on Headers
MAX_CAMPAIGN_CHARS = 255
#: Error codes that say the account (key, sender, template owner) is at fault.
ACCOUNT_ERROR_CODES = frozenset(
    {"send-0006", "send-0007", "send-0008", "send-0010", "mj-0001", "mj-0015"}
)
_RESERVED_HEADER_PREFIXES = ("x-mj-", "x-mailjet-")
_REASON_CHARS = 300


class MailjetVendor(HttpVendor):
    """A Mailjet account (API key and secret); `base_url` may point at an emulator."""

    kind = "mailjet"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        api_secret: str,
        base_url: str = "https://api.mailjet.com",
    ) -> None:
        super().__init__(name, transport)
        if not api_key or not api_secret:
            raise ValueError(f"vendor {name!r}: Mailjet needs an api_key and an api_secret")
        credentials = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")
        self._url = base_url.rstrip("/") + "/v3.1/send"
        self._headers = {
            "Authorization": f"Basic {credentials}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        #: Wall clock, for a Retry-After given as an HTTP date; tests replace it.
        self.clock: Callable[[], float] = time.time

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        body = json_body(_body(message))
        headers = {**self._headers, "Idempotency-Key": message_id}
        return HttpRequest("POST", self._url, headers, body)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's Mailjet request as it came, with this account's key and mailmux's
        Idempotency-Key (the caller's, or its SDK's, is mailmux's business)."""
        headers = {
            **self._headers,
            "Content-Type": original.content_type,
            "Idempotency-Key": message_id,
        }
        return HttpRequest("POST", self._url, headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        data = _json(response.body)
        entries = _entries(data)
        taken = [e for e in entries if e.get("Status") == "success"]
        refused = [e for e in entries if e.get("Status") == "error"]
        if refused and not taken:
            return self._message_errors(status, refused[0], response)
        if taken and refused:  # some copies of a bcc-only message went out
            errors = [e for entry in refused for e in _list(entry.get("Errors"))]
            described = "; ".join(_describe(e) for e in errors if isinstance(e, dict))
            reason = f"{len(refused)} of {len(entries)} copies refused: {described}"
            return AttemptResult(
                Outcome.ACCEPTED,
                vendor_message_id=_message_id(taken[0]),
                status=status,
                reason=_clip(reason),
            )
        if 200 <= status < 300:
            first = taken[0] if taken else entries[0] if entries else None
            return AttemptResult(
                Outcome.ACCEPTED, vendor_message_id=_message_id(first), status=status
            )
        return self._call_error(status, data, response)

    def _message_errors(
        self, status: int, entry: dict[str, Any], response: HttpResponse
    ) -> AttemptResult:
        """A per-message `Status: error` entry, classified from its own codes."""
        errors = [e for e in _list(entry.get("Errors")) if isinstance(e, dict)]
        reason = _clip("; ".join(map(_describe, errors)) or excerpt(response.body))
        codes = {e.get("ErrorCode") for e in errors}
        statuses = {e["StatusCode"] for e in errors if isinstance(e.get("StatusCode"), int)}
        if not 200 <= status < 300:
            statuses.add(status)
        if codes & ACCOUNT_ERROR_CODES or statuses & {401, 403}:
            reason = f"sender or account refused: {reason}"
            return AttemptResult(Outcome.VENDOR_CONFIG, status=status, reason=reason)
        if 429 in statuses:
            return self._rate_limited(status, reason, response)
        if any(s >= 500 for s in statuses):
            return AttemptResult(Outcome.RETRIABLE, status=status, reason=reason)
        return AttemptResult(Outcome.PERMANENT, status=status, reason=reason)

    def _call_error(self, status: int, data: object, response: HttpResponse) -> AttemptResult:
        """A global error (or no readable body): classified by status and code."""
        detail = _global_detail(status, data, response.body)
        code = data.get("ErrorCode") if isinstance(data, dict) else None
        if code in ACCOUNT_ERROR_CODES or status in (401, 403):
            reason = f"API key or account refused: {detail}"
            return AttemptResult(Outcome.VENDOR_CONFIG, status=status, reason=reason)
        if status in (400, 413):
            return AttemptResult(Outcome.PERMANENT, status=status, reason=detail)
        if status == 429:
            return self._rate_limited(status, detail, response)
        if status in (404, 405) or 300 <= status < 400:
            reason = f"not a Mailjet send endpoint; check base_url: {detail}"
            return AttemptResult(Outcome.VENDOR_CONFIG, status=status, reason=reason)
        if status < 500:
            detail = f"unexpected status: {detail}"
        return AttemptResult(
            Outcome.RETRIABLE,
            status=status,
            reason=detail,
            retry_after=parse_retry_after(response.headers.get("retry-after"), self.clock()),
        )

    def _rate_limited(self, status: int, reason: str, response: HttpResponse) -> AttemptResult:
        return AttemptResult(
            Outcome.RATE_LIMITED,
            status=status,
            reason=f"rate limited: {reason}",
            retry_after=parse_retry_after(response.headers.get("retry-after"), self.clock()),
        )


def _body(message: Message) -> dict[str, Any]:
    """The request: one message, or a bcc-only message's copies (module docstring)."""
    entry = _message(message)
    if message.to:
        return {"Messages": [entry]}
    if message.cc:
        raise UnsupportedFeature(
            "cc without a To recipient: Mailjet requires To in every message, and a message"
            " per cc address would hide them from each other"
        )
    shared = {key: value for key, value in entry.items() if key != "Bcc"}
    return {"Globals": shared, "Messages": [{"To": [_address(a)]} for a in message.bcc]}


def _message(message: Message) -> dict[str, Any]:
    """One entry of `Messages`; empty fields are left out, never sent as empty values."""
    if message.raw_mime is not None and message.text is None and message.html is None:
        raise UnsupportedFeature("raw MIME: Mailjet takes no raw message, and no body was parsed")
    if not message.text and not message.html:
        raise UnsupportedFeature("no text or HTML body: Mailjet requires TextPart or HTMLPart")
    recipients = len(message.to) + len(message.cc) + len(message.bcc)
    if recipients > MAX_RECIPIENTS:
        raise UnsupportedFeature(
            f"{recipients} recipients; Mailjet takes at most {MAX_RECIPIENTS} per message"
        )
    entry: dict[str, Any] = {"From": _address(message.sender)}
    if message.to:
        entry["To"] = _addresses(message.to)
    if message.cc:
        entry["Cc"] = _addresses(message.cc)
    if message.bcc:
        entry["Bcc"] = _addresses(message.bcc)
    if len(message.reply_to) > 1:
        raise UnsupportedFeature(
            f"{len(message.reply_to)} reply-to addresses; Mailjet takes one ReplyTo"
        )
    if message.reply_to:
        entry["ReplyTo"] = _address(message.reply_to[0])
    if message.subject:
        entry["Subject"] = message.subject
    if message.text:
        entry["TextPart"] = message.text
    if message.html:
        entry["HTMLPart"] = message.html
    if message.headers:
        entry["Headers"] = _headers(message.headers)
    regular = [a for a in message.attachments if not a.inline]
    inline = [a for a in message.attachments if a.inline]
    if regular:
        entry["Attachments"] = _attachments(regular, "attachments")
    if inline:
        entry["InlinedAttachments"] = _attachments(inline, "inline attachments")
    if message.tags:
        entry["CustomCampaign"] = _campaign(message.tags)
    if message.metadata:
        entry["EventPayload"] = orjson.dumps(dict(message.metadata)).decode()
    return entry


def _address(address: Address) -> dict[str, str]:
    if address.name:
        return {"Email": address.email, "Name": address.name}
    return {"Email": address.email}


def _addresses(addresses: Sequence[Address]) -> list[dict[str, str]]:
    return [_address(a) for a in addresses]


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    if len(headers) > MAX_ITEMS:
        raise UnsupportedFeature(
            f"{len(headers)} custom headers; Mailjet takes at most {MAX_ITEMS}"
        )
    for name in headers:
        if name.lower().startswith(_RESERVED_HEADER_PREFIXES):
            raise UnsupportedFeature(
                f"header {name}: Mailjet reserves its X-MJ-/X-Mailjet- headers for message"
                " properties (send-0011)"
            )
    return dict(headers)


def _attachments(attachments: Sequence[Attachment], kind: str) -> list[AttachmentEntry]:
    if len(attachments) > MAX_ITEMS:
        raise UnsupportedFeature(f"{len(attachments)} {kind}; Mailjet takes at most {MAX_ITEMS}")
    entries: list[AttachmentEntry] = []
    for attachment in attachments:
        if not attachment.content:
            raise UnsupportedFeature(
                f"empty attachment {attachment.filename!r}: Mailjet rejects empty content"
            )
        entry: AttachmentEntry = {
            "ContentType": attachment.content_type,
            "Filename": attachment.filename,
            "Base64Content": base64_text(attachment.content),
        }
        if attachment.inline and attachment.content_id:
            entry["ContentID"] = attachment.content_id
        entries.append(entry)
    return entries


def _campaign(tags: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(tags))
    if len(distinct) > 1:
        raise UnsupportedFeature(
            f"{len(distinct)} distinct tags; Mailjet takes one (as CustomCampaign)"
        )
    (tag,) = distinct
    if len(tag) > MAX_CAMPAIGN_CHARS:
        raise UnsupportedFeature(
            f"tag of {len(tag)} characters; Mailjet's CustomCampaign takes at most"
            f" {MAX_CAMPAIGN_CHARS}"
        )
    return tag


def _json(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _entries(data: object) -> list[dict[str, Any]]:
    """The answer's per-message entries, in the order of the request's messages."""
    messages = _list(data.get("Messages")) if isinstance(data, dict) else []
    return [m for m in messages if isinstance(m, dict)]


def _message_id(entry: dict[str, Any] | None) -> str | None:
    """The first To recipient's MessageUUID, else its numeric MessageID as a string."""
    recipients = _list(entry.get("To")) if entry is not None else []
    first = recipients[0] if recipients else None
    if not isinstance(first, dict):
        return None
    uuid = first.get("MessageUUID")
    if isinstance(uuid, str) and uuid:
        return uuid
    number = first.get("MessageID")
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return str(number)
    return None


def _describe(error: dict[str, Any]) -> str:
    """`mj-0013 (To[0].Email): "x" is an invalid email address.`"""
    code = error.get("ErrorCode")
    message = error.get("ErrorMessage")
    related = [r for r in _list(error.get("ErrorRelatedTo")) if isinstance(r, str)]
    text = message if isinstance(message, str) else "error"
    if related:
        text = f"({', '.join(related)}): {text}"
    return f"{code} {text}" if isinstance(code, str) and code else text


def _global_detail(status: int, data: object, body: bytes) -> str:
    """Mailjet's global error text with its code and identifier, else an excerpt or phrase."""
    text = ""
    if isinstance(data, dict) and isinstance(data.get("ErrorMessage"), str):
        text = _describe(data)
        identifier = data.get("ErrorIdentifier")
        if isinstance(identifier, str) and identifier:
            text += f" [ErrorIdentifier {identifier}]"
    text = text or excerpt(body)
    if not text:
        try:
            text = HTTPStatus(status).phrase
        except ValueError:
            text = f"HTTP {status}"
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
