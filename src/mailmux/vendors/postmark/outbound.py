"""Postmark (`POST {base_url}/email`): Message → request, answer → outcome.

The body is Postmark's single-message JSON: `From`, comma-separated `To`,
`Cc`, `Bcc` and `ReplyTo`, `Subject`, `TextBody`, `HtmlBody`,
`Headers[{Name, Value}]`, one `Tag`, `Metadata{}`, and
`Attachments[{Name, Content (base64), ContentType, ContentID}]` where an
inline part's ContentID is `cid:<id>`. Empty fields are left out rather than
sent as `null`.

A message without To (cc and/or bcc only) is sent without `To`. Postmark's API
reference marks `To` required, but Postmark takes and sends a message whose
recipients are all in `Cc` or `Bcc` (found and relied on by django-anymail and
by ActiveCampaign's own Postmark transport for Swiftmailer); it answers without
a `To` then. Postmark writes the headers itself and keeps Bcc out of them.

A message that came in through Postmark's own API (`vendors.postmark.inbound`)
is not translated: `passthrough_request` sends the caller's body unchanged
with this vendor's server token, to `/email` or `/email/withTemplate` (a
batch item arrives narrowed to itself), so templates, tracking and message
streams still work.

How Postmark's answers are classified, and why:

=================  ==============  ====================================================
answer             outcome         why
=================  ==============  ====================================================
200, ErrorCode 0   accepted        Postmark took it; the id is `MessageID`. When it says
                                   some addresses are inactive, the others were still
                                   sent: accepted, and the reason names them.
200, other body    vendor_config   No MessageID: not Postmark's send API (`base_url`).
401                vendor_config   The server token is missing or wrong.
422 / 10           vendor_config   Bad or missing server token.
422 / 400, 401     vendor_config   Sender signature not found / not confirmed: this
                                   account cannot send as this sender, another may.
422 / 405          vendor_config   Not allowed to send (e.g. out of credits): the
                                   account needs a person, not a retry.
422 / 409          vendor_config   "JSON required": headers lost on the way (a proxy?).
422 / 412, 413     vendor_config   Account pending approval / may not send.
422 / 300          permanent       Invalid email request (addresses, fields, sizes).
422 / 402, 403     permanent       Postmark could not read this body as a message.
422 / 406          permanent       Every recipient is inactive (hard bounce, complaint,
                                   suppression): a recipient error.
422 / 411          permanent       Forbidden attachment type.
422 / other        retriable       An undocumented code must not fail the message.
413                permanent       Over 10 MB: the message must change.
404, 405, 3xx      vendor_config   Wrong `base_url`.
429                rate_limited    Throttled; Postmark documents no rate-limit header,
                                   so `retry_after` only from a `Retry-After`.
5xx                retriable       500 internal error, 503 maintenance.
other              retriable       An undocumented status must not fail the message.
=================  ==============  ====================================================

What Postmark cannot carry raises `UnsupportedFeature` before any request:
raw MIME without a parsed body (Postmark takes no raw message), no text/HTML
body (Postmark requires one), more than 50 recipients, more than one
distinct tag or a tag over 1000 characters, metadata keys that differ only
in case, a body over 5 MB, and a request over 10 MB. Postmark takes no
idempotency key: neither the message id nor the caller's key is sent, and a
retry after an ambiguous attempt may be sent twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

import orjson

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
    fallback_outcome,
    parse_retry_after,
)
from mailmux.vendors.body import AttachmentEntry, base64_text, json_body

MAX_RECIPIENTS = 50
#: The single-message endpoints a caller's request can be passed through to.
SINGLE_PATHS = {"email": "/email", "template": "/email/withTemplate"}
MAX_TAG_CHARS = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024  # TextBody and HtmlBody, each
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # the whole request, attachments base64-encoded
_REASON_CHARS = 300
#: RFC 5322 `specials`: a display name holding one must be quoted, or Postmark would
#: split a comma-separated To at a comma inside a name.
_SPECIALS = frozenset('()<>[]:;@\\,."')

#: Postmark's API error codes (the `ErrorCode` of a 422) and what each means for us.
_CODES: Mapping[int, tuple[Outcome, str]] = {
    10: (Outcome.VENDOR_CONFIG, "server token rejected"),
    300: (Outcome.PERMANENT, "invalid email request"),
    400: (Outcome.VENDOR_CONFIG, "sender signature not found"),
    401: (Outcome.VENDOR_CONFIG, "sender signature not confirmed"),
    402: (Outcome.PERMANENT, "invalid JSON"),
    403: (Outcome.PERMANENT, "incompatible JSON"),
    405: (Outcome.VENDOR_CONFIG, "account not allowed to send (out of credits?)"),
    406: (Outcome.PERMANENT, "every recipient is inactive"),
    409: (Outcome.VENDOR_CONFIG, "JSON required (headers lost on the way?)"),
    411: (Outcome.PERMANENT, "forbidden attachment type"),
    412: (Outcome.VENDOR_CONFIG, "account pending approval"),
    413: (Outcome.VENDOR_CONFIG, "account may not send"),
}
_CONFIG_REASONS = {
    401: "server token rejected",
    404: "not found; check base_url",
    405: "method not allowed; check base_url",
}


class PostmarkVendor(HttpVendor):
    """A Postmark server (its server token); `base_url` may point at an emulator."""

    kind = "postmark"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        base_url: str = "https://api.postmarkapp.com",
    ) -> None:
        super().__init__(name, transport)
        if not api_key:
            raise ValueError(f"vendor {name!r}: Postmark needs an api_key (the server token)")
        self._base_url = base_url.rstrip("/")
        self._url = self._base_url + "/email"
        self._headers = {
            "X-Postmark-Server-Token": api_key,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        #: Wall clock, for Retry-After given as an HTTP date; tests replace it.
        self.clock: Callable[[], float] = time.time

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        body = json_body(_payload(message))
        if len(body) > MAX_REQUEST_BYTES:
            raise UnsupportedFeature(
                f"request of {len(body) / 2**20:.1f} MB; Postmark takes at most 10 MB"
            )
        return HttpRequest("POST", self._url, self._headers, body)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's Postmark request with this vendor's server token.

        A message of a batch arrives narrowed to itself, named by the single-send
        endpoint (`email` or `template`), so it goes to `/email` or `/email/withTemplate`.
        """
        path = SINGLE_PATHS.get(original.endpoint)
        if path is None:
            raise UnsupportedFeature(f"no Postmark endpoint {original.endpoint!r} to pass through")
        headers = {**self._headers, "Content-Type": original.content_type or "application/json"}
        return HttpRequest("POST", self._base_url + path, headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        data = _json(response.body)
        if 200 <= status < 300:
            return _accepted(response, data)
        if status == 422:
            return _api_error(status, data, response.body)
        detail = _detail(response, data)
        if status == 413:
            return AttemptResult(Outcome.PERMANENT, status=status, reason=detail)
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        if status == 429:
            return AttemptResult(
                Outcome.RATE_LIMITED,
                status=status,
                reason=f"rate limited: {detail}",
                retry_after=retry_after,
            )
        return fallback_outcome(status, detail, _CONFIG_REASONS, retry_after)


def _payload(message: Message) -> dict[str, Any]:
    """The `/email` body for `message`; empty fields are left out."""
    if message.raw_mime is not None and not (message.text or message.html):
        raise UnsupportedFeature("raw MIME: Postmark takes no raw message, and no body was parsed")
    if not (message.text or message.html):
        raise UnsupportedFeature("no text or HTML body: Postmark requires one")
    count = len(message.to) + len(message.cc) + len(message.bcc)
    if count > MAX_RECIPIENTS:
        raise UnsupportedFeature(
            f"{count} recipients; Postmark takes at most {MAX_RECIPIENTS} per message"
        )
    body: dict[str, Any] = {"From": _mailbox(message.sender)}
    if message.to:
        body["To"] = _mailboxes(message.to)
    if message.cc:
        body["Cc"] = _mailboxes(message.cc)
    if message.bcc:
        body["Bcc"] = _mailboxes(message.bcc)
    if message.reply_to:
        body["ReplyTo"] = _mailboxes(message.reply_to)
    if message.subject:
        body["Subject"] = message.subject
    for key, value in (("TextBody", message.text), ("HtmlBody", message.html)):
        if value:
            if len(value.encode()) > MAX_BODY_BYTES:
                raise UnsupportedFeature(f"{key} over 5 MB; Postmark takes at most 5 MB each")
            body[key] = value
    if message.headers:
        body["Headers"] = [{"Name": n, "Value": v} for n, v in message.headers.items()]
    if message.tags:
        body["Tag"] = _tag(message.tags)
    if message.metadata:
        body["Metadata"] = _metadata(message.metadata)
    if message.attachments:
        body["Attachments"] = [_attachment(a) for a in message.attachments]
    return body


def _tag(tags: Iterable[str]) -> str:
    unique = list(dict.fromkeys(tags))
    if len(unique) > 1:
        raise UnsupportedFeature(f"{len(unique)} tags; Postmark takes one tag per message")
    (tag,) = unique
    if len(tag) > MAX_TAG_CHARS:
        raise UnsupportedFeature(
            f"tag {tag[:20]!r}… is {len(tag)} characters; Postmark takes at most {MAX_TAG_CHARS}"
        )
    return tag


def _metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for key in metadata:
        other = seen.setdefault(key.casefold(), key)
        if other != key:
            raise UnsupportedFeature(
                f"metadata keys {other!r} and {key!r} differ only in case; Postmark refuses that"
            )
    return dict(metadata)


def _attachment(attachment: Attachment) -> AttachmentEntry:
    entry: AttachmentEntry = {
        "Name": attachment.filename,
        "Content": base64_text(attachment.content),
        "ContentType": attachment.content_type,
    }
    if attachment.inline and attachment.content_id:
        entry["ContentID"] = f"cid:{attachment.content_id}"
    return entry


def _mailboxes(addresses: Iterable[Address]) -> str:
    return ", ".join(_mailbox(a) for a in addresses)


def _mailbox(address: Address) -> str:
    """`Name <addr>`, the name quoted when it holds address syntax (`,`, `<`, `"` …);
    an IDN domain goes out in punycode when the local part allows."""
    addr = ascii_email(address.email) or address.email
    name = address.name
    if not name:
        return addr
    if any(c in _SPECIALS for c in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _error_code(data: Any) -> int | None:
    code = data.get("ErrorCode") if isinstance(data, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _accepted(response: HttpResponse, data: Any) -> AttemptResult:
    code = _error_code(data)
    if code:  # an error code in a 2xx: trust the code, not the status
        return _api_error(response.status, data, response.body)
    message_id = data.get("MessageID") if isinstance(data, dict) else None
    if not (isinstance(message_id, str) and message_id):
        return AttemptResult(
            Outcome.VENDOR_CONFIG,
            status=response.status,
            reason=(
                "answered without a MessageID, nothing shows it was sent (not Postmark's send API;"
                f" check base_url): {excerpt(response.body) or 'empty body'}"
            ),
        )
    text = data.get("Message")
    note = text if isinstance(text, str) and "inactive" in text else ""
    return AttemptResult(
        Outcome.ACCEPTED, vendor_message_id=message_id, status=response.status, reason=note
    )


def _api_error(status: int, data: Any, body: bytes) -> AttemptResult:
    code = _error_code(data)
    message = data.get("Message") if isinstance(data, dict) else None
    text = message if isinstance(message, str) and message else excerpt(body) or "no details"
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 1] + "…"
    known = _CODES.get(code) if code is not None else None
    if known is None:
        return AttemptResult(
            Outcome.RETRIABLE, status=status, reason=f"unexpected ErrorCode {code}: {text}"
        )
    outcome, meaning = known
    return AttemptResult(outcome, status=status, reason=f"ErrorCode {code}, {meaning}: {text}")


def _detail(response: HttpResponse, data: Any) -> str:
    """Postmark's own `Message`, else a body excerpt, else the status phrase."""
    message = data.get("Message") if isinstance(data, dict) else None
    text = message if isinstance(message, str) and message else excerpt(response.body)
    if not text:
        try:
            text = HTTPStatus(response.status).phrase
        except ValueError:
            text = f"HTTP {response.status}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
