"""Resend (`POST {base_url}/emails`): Message → request, answer → outcome.

How Resend's answers are classified, and why (names from Resend's "Errors" page; the
body is `{"statusCode", "name", "message"}`):

======  ================================  ==============  ===================================
status  name                              outcome         why
======  ================================  ==============  ===================================
2xx                                       accepted        `{"id"}` is the vendor message id.
2xx     (no id)                           ambiguous       Not Resend's answer (a proxy, a
                                                          wrong `base_url`): the request left
                                                          and nobody knows where it went.
400     invalid_idempotency_key           unsupported     Resend refuses the key (a message
                                                          id always fits its rules, so this
                                                          means the rules changed); another
                                                          vendor can still send it.
400     validation_error "API key…"       vendor_config   Resend also answers 400 for a
                                                          malformed Authorization header.
400     validation_error, others          permanent       The message is invalid.
401     missing_api_key,                  vendor_config   The key is missing, invalid or
        restricted_api_key, …                             cannot send: every message fails.
403     invalid_api_key, validation_error vendor_config   Bad key, unverified domain, or a
                                                          test account that may only send to
                                                          its owner: about the account.
404     not_found                         vendor_config   Wrong `base_url`: fix the config.
405     method_not_allowed
409     invalid_idempotent_request        ambiguous       An earlier attempt of this message
                                                          reached Resend under its key (24 h)
                                                          with another body (mailmux changed
                                                          between the attempts): Resend may
                                                          have sent that one, which is what
                                                          the class's ambiguous policy is for.
409     concurrent_idempotent_requests    ambiguous       An earlier attempt under this key
                                                          is still in flight at Resend: its
                                                          outcome is unknown, which is what
                                                          the class's ambiguous policy is
                                                          for. `retry_after` kept.
413                                       unsupported     Too large for Resend; another
                                                          vendor may take it.
422     invalid_from_address              vendor_config   Resend will not send for this
                                                          sender (mailmux already validated
                                                          it): the vendor, not the message.
422     others (missing_required_field,   permanent       The message is invalid.
        invalid_attachment, …)
429     rate_limit_exceeded               rate_limited    Throttled; `retry_after` from
                                                          `retry-after`, else
                                                          `ratelimit-reset` (seconds).
429     daily_quota_exceeded,             rate_limited    Sending quota used up; the reason
        monthly_quota_exceeded                            says "quota".
451     security_error                    unsupported     Resend refused this payload (it
                                                          answers so for content it deems
                                                          unsafe, e.g. encoded words in
                                                          `from`); another vendor may take
                                                          it, and Resend is not to blame.
3xx                                       vendor_config   An unfollowed redirect: `base_url`.
5xx     application_error, …              retriable       Resend's trouble; `retry-after`
                                                          kept.
other                                     retriable       Undocumented: never fail a message
                                                          for good on it.
======  ================================  ==============  ===================================

How the Message maps, and the choices made:

- `Idempotency-Key` is mailmux's message id, the same on every attempt and retry of one
  message (the caller's own Idempotency-Key is mailmux's business, not Resend's): Resend
  keeps keys for 24 hours and answers a repeated request with its first answer, so a
  retry after an ambiguous attempt does not send a second email. The body of a retry is
  the same as the first attempt's, as Resend requires of a repeated key.
- `from` is `Name <addr>` with the name unquoted and unencoded: Resend answers 451 to
  an RFC 2047 encoded name there and 422 to a quoted one, so a sender name with
  `,;:<>@"()[]\\` is refused below. In to/cc/bcc/reply_to, where Resend rejects quoted
  names but takes encoded words, non-ASCII names and names with specials are sent as
  RFC 2047 encoded words (as django-anymail found). IDN domains go in punycode.
- Tags become `tags: [{"name": tag, "value": "true"}]`. Resend has no metadata field;
  metadata becomes tags too, `{"name": key, "value": value}`, because Resend's tags
  are its key/value data returned with webhook events and email look-ups, which is
  what metadata is for (an `X-Metadata` header would reach the recipients and never
  come back). Both must fit Resend's alphabet (ASCII letters, digits, `_`, `-`; 1-256
  characters), and a metadata key may not name a tag with another value.
- Inline attachments carry their `content_id`; a non-inline attachment's content id is
  not sent, because Resend would make the attachment inline.
- A message with `raw_mime` is sent from its parsed fields (Resend takes no MIME).
- A message without To (cc and/or bcc only) is unsupported: Resend requires `to`
  on every email (its API definition: required, at least one address). Its
  batch endpoint could send each bcc recipient a copy of their own, but it takes
  no attachments and answers per email, and Resend has no MIME endpoint that
  would take the envelope apart from the headers.
- `User-Agent: mailmux/<version>` is always sent: Resend refuses requests without one.
- A request that came in through mailmux's Resend shape is passed through
  (`passthrough_request`): the caller's body, unchanged, to the same endpoint
  (`/emails`, or `/emails/batch` for a batch of one), with this account's key
  and the same message-id `Idempotency-Key` as a translated send.

What Resend cannot carry raises `UnsupportedFeature` before any request: raw MIME
without a parsed body, an empty subject, no text or HTML body, no To recipient or more
than 50, a sender name with the characters above, a tag or metadata outside Resend's
tag alphabet, a metadata key that clashes with a tag, and an inline attachment without
a content id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from email.charset import Charset
from http import HTTPStatus
from typing import Any

import orjson

from mailmux import __version__
from mailmux.addresses import ascii_email
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
    retry_after_from,
)
from mailmux.vendors.body import AttachmentEntry, base64_text, json_body

MAX_TO = 50
#: Each endpoint of the Resend shape (`inbound.ENDPOINTS`), under `{base_url}/emails`.
_PASSTHROUGH_PATHS = {"emails": "", "batch": "/batch"}
QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
#: What a `from` display name may not hold: Resend rejects it unquoted, and quoted too.
_FROM_REFUSED = re.compile(r'[][\\()<>@,:;"]')
_UTF8 = Charset("utf-8")
_REASON_CHARS = 300


class ResendVendor(HttpVendor):
    """A Resend account; `base_url` may point at an emulator."""

    kind = "resend"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        base_url: str = "https://api.resend.com",
    ) -> None:
        super().__init__(name, transport)
        if not api_key:
            raise ValueError(f"vendor {name!r}: Resend needs an api_key")
        self._url = base_url.rstrip("/") + "/emails"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"mailmux/{__version__}",
        }
        #: Wall clock (Retry-After may be an HTTP date); tests replace it.
        self.clock: Callable[[], float] = time.time

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        headers = {**self._headers, "Idempotency-Key": message_id}
        return HttpRequest("POST", self._url, headers, json_body(_payload(message)))

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        suffix = _PASSTHROUGH_PATHS.get(original.endpoint)
        if suffix is None:
            raise UnsupportedFeature(f"Resend has no endpoint {original.endpoint!r} to pass to")
        headers = {
            **self._headers,
            "Content-Type": original.content_type,
            "Idempotency-Key": message_id,
        }
        return HttpRequest("POST", self._url + suffix, headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        data = _json(response.body)
        if 200 <= status < 300:
            message_id = _email_id(data)
            if message_id:
                return AttemptResult(Outcome.ACCEPTED, vendor_message_id=message_id, status=status)
            return AttemptResult(
                Outcome.AMBIGUOUS,
                status=status,
                reason=f"HTTP {status} without an email id; check base_url",
            )
        name = data.get("name") if isinstance(data, dict) else None
        detail = _detail(data, response)
        if status == 429:
            quota = name in QUOTA_ERRORS
            what = f"{str(name).replace('_', ' ')} (quota)" if quota else "rate limited"
            return AttemptResult(
                Outcome.RATE_LIMITED,
                status=status,
                reason=f"{what}: {detail}",
                retry_after=self._retry_after(response, or_reset=True),
            )
        outcome = _classify(status, name, detail)
        if outcome is Outcome.UNSUPPORTED:
            detail = f"{self.kind}: {detail}"
        elif outcome is Outcome.VENDOR_CONFIG:
            detail = f"{_CONFIG_REASONS.get(status, 'redirected; check base_url')}: {detail}"
        elif outcome is Outcome.RETRIABLE and status < 500:
            detail = f"unexpected status: {detail}"
        retry_after = None
        if outcome in (Outcome.RETRIABLE, Outcome.AMBIGUOUS):
            retry_after = self._retry_after(response)
        return AttemptResult(outcome, status=status, reason=detail, retry_after=retry_after)

    def _retry_after(self, response: HttpResponse, *, or_reset: bool = False) -> float | None:
        """`retry-after`; on a 429 also `ratelimit-reset`, which Resend sends on every answer
        but which only says when to retry once the limit is what refused the request."""
        # IETF RateLimit draft, as Resend sends it: seconds until the window resets.
        reset_header = "ratelimit-reset" if or_reset else None
        return retry_after_from(response.headers, self.clock(), reset_header=reset_header)


def _classify(status: int, name: object, detail: str) -> Outcome:
    """Every non-2xx, non-429 answer's outcome (see the table in the module docstring)."""
    if status == 400:
        if name == "invalid_idempotency_key":
            return Outcome.UNSUPPORTED
        return Outcome.VENDOR_CONFIG if "API key" in detail else Outcome.PERMANENT
    if status == 422:
        return Outcome.VENDOR_CONFIG if name == "invalid_from_address" else Outcome.PERMANENT
    if status == 409:
        if name in ("invalid_idempotent_request", "concurrent_idempotent_requests"):
            return Outcome.AMBIGUOUS
        return Outcome.RETRIABLE
    if status in (413, 451):
        return Outcome.UNSUPPORTED
    if status in _CONFIG_REASONS or 300 <= status < 400:
        return Outcome.VENDOR_CONFIG
    return Outcome.RETRIABLE


_CONFIG_REASONS = {
    400: "API key rejected",
    401: "API key missing, invalid or not allowed to send",
    403: "forbidden (invalid API key, unverified domain, or a test-only account)",
    404: "not found; check base_url",
    405: "method not allowed; check base_url",
    422: "Resend will not send for this sender",
}


# -- Message → request -------------------------------------------------------------


def _payload(message: Message) -> dict[str, Any]:
    """The email; empty fields are left out, never sent as empty values."""
    if message.raw_mime is not None and message.text is None and message.html is None:
        raise UnsupportedFeature("raw MIME: Resend takes no raw message, and no body was parsed")
    if not message.subject:
        raise UnsupportedFeature("empty subject: Resend requires one")
    if not (message.text or message.html):
        raise UnsupportedFeature("no text or HTML body: Resend requires one")
    if not message.to:
        raise UnsupportedFeature(
            "no To recipient: Resend requires to on every email (cc or bcc alone will not do)"
        )
    if len(message.to) > MAX_TO:
        raise UnsupportedFeature(f"{len(message.to)} To recipients; Resend takes at most {MAX_TO}")
    payload: dict[str, Any] = {
        "from": _sender(message.sender),
        "to": [_mailbox(a) for a in message.to],
        "subject": message.subject,
    }
    for field, addresses in (
        ("cc", message.cc),
        ("bcc", message.bcc),
        ("reply_to", message.reply_to),
    ):
        if addresses:
            payload[field] = [_mailbox(a) for a in addresses]
    if message.html:
        payload["html"] = message.html
    if message.text:
        payload["text"] = message.text
    if message.headers:
        payload["headers"] = dict(message.headers)
    if message.attachments:
        payload["attachments"] = [_attachment(a) for a in message.attachments]
    tags = _tags(message.tags, message.metadata)
    if tags:
        payload["tags"] = tags
    return payload


def _wire_email(address: Address) -> str:
    return ascii_email(address.email) or address.email


def _sender(address: Address) -> str:
    """`Name <addr>` exactly as Resend's `from` takes it: no quotes, no encoded words."""
    addr = _wire_email(address)
    if not address.name:
        return addr
    refused = _FROM_REFUSED.search(address.name)
    if refused:
        raise UnsupportedFeature(
            f"sender name {address.name!r} holds {refused.group()!r};"
            " Resend's from field takes no quoted or encoded name"
        )
    return f"{address.name} <{addr}>"


def _mailbox(address: Address) -> str:
    """A recipient or reply-to: plain names as they are, others as an RFC 2047 word."""
    addr = _wire_email(address)
    name = address.name
    if not name:
        return addr
    if name.isascii() and not _SPECIALS.search(name):
        return f"{name} <{addr}>"
    return f"{_UTF8.header_encode(name)} <{addr}>"


def _attachment(attachment: Attachment) -> AttachmentEntry:
    entry: AttachmentEntry = {
        "filename": attachment.filename,
        "content": base64_text(attachment.content),
        "content_type": attachment.content_type,
    }
    if attachment.inline:
        if not attachment.content_id:
            raise UnsupportedFeature(
                f"inline attachment {attachment.filename!r} has no content id;"
                " Resend makes an attachment inline only by its content_id"
            )
        entry["content_id"] = attachment.content_id
    return entry


def _tags(tags: tuple[str, ...], metadata: Mapping[str, str]) -> list[dict[str, str]]:
    pairs: dict[str, str] = {}
    for tag in tags:
        _check_tag_text(tag, "tag")
        pairs[tag] = "true"
    for key, value in metadata.items():
        _check_tag_text(key, "metadata key")
        _check_tag_text(value, f"metadata value of {key!r}")
        if pairs.get(key, value) != value:
            raise UnsupportedFeature(
                f"metadata key {key!r} is also a tag; both are Resend tags named {key!r}"
            )
        pairs[key] = value
    return [{"name": name, "value": value} for name, value in pairs.items()]


def _check_tag_text(text: str, what: str) -> None:
    if not _TAG.fullmatch(text):
        raise UnsupportedFeature(
            f"{what} {text[:40]!r}: Resend tags take 1 to 256 ASCII letters, digits, '_' or '-'"
        )


# -- answer → outcome ----------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _email_id(data: Any) -> str | None:
    """The id in `{"id"}`, or in `{"data": [{"id"}]}` (a passed-through batch of one)."""
    if not isinstance(data, dict):
        return None
    batch = data.get("data")
    if isinstance(batch, list) and len(batch) == 1 and isinstance(batch[0], dict):
        data = batch[0]
    found = data.get("id")
    return found if isinstance(found, str) and found else None


def _detail(data: Any, response: HttpResponse) -> str:
    """`name: message` from Resend's error body, else a body excerpt, else the phrase."""
    text = ""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        name = data.get("name")
        text = f"{name}: {data['message']}" if isinstance(name, str) else data["message"]
    text = text or excerpt(response.body)
    if not text:
        try:
            text = HTTPStatus(response.status).phrase
        except ValueError:
            text = f"HTTP {response.status}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
