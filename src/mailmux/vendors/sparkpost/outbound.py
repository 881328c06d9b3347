"""SparkPost Transmissions (`POST {base_url}/api/v1/transmissions`): Message → request,
answer → outcome.

How SparkPost's answers are classified, and why (statuses and extended error codes from
SparkPost's "Extended Error Codes" table):

======  ==============  ================================================================
status  outcome         why
======  ==============  ================================================================
2xx     accepted        The transmission was created; its id (`results.id`) is the
                        vendor message id. When `total_rejected_recipients` > 0 the
                        reason names how many were rejected (and `rcpt_to_errors`).
2xx     permanent       ...unless every recipient was rejected (0 accepted): nothing
                        will be delivered, and that is about the recipients.
2xx     ambiguous       A 2xx without `results.id` did not come from SparkPost's
                        transmissions API (a proxy, a wrong `base_url`): the request
                        left and nobody can say whether SparkPost has it.
400     permanent       The message is invalid (1200, 1305, 1901, 1902 "message
                        generation rejected" — e.g. a suppressed recipient).
400     vendor_config   ...except codes about the account, not the message: 7000/7001
                        sending domain blocked, unconfigured or unverified; 1910
                        message generation not configured; 2009-2012 tracking domain.
400     retriable       ...and 1502 "server resources unavailable, retry later".
401     vendor_config   API key rejected (1303, 1304).
403     vendor_config   Permission denied or no licence (1100, 1601): the key lacks
                        the Transmissions permission.
404     vendor_config   Wrong `base_url` (or a proxy in the way): every message would
405                     fail the same way while another vendor could send it.
406
415
3xx     vendor_config   A redirect that was not followed: `base_url` is wrong.
413     unsupported     Too large for SparkPost; another vendor may take it, so the
                        message is not failed for good and SparkPost is not blamed.
420     rate_limited    Plan sending limit exceeded (2101 hourly, 2102 daily, 2103
                        sandbox): a quota, said in the reason; `Retry-After` if sent.
422     permanent       The message is invalid (1300, 1400, 3000-3050 content and
                        headers, 2007 metadata too large, 10000 restricted header).
429     rate_limited    Throttled; `retry_after` from `Retry-After` when given.
5xx     retriable       SparkPost's trouble ("usually transient"); `Retry-After` kept.
other   retriable       An undocumented status says nothing certain about the message:
                        another vendor tries, and health counts it against SparkPost.
======  ==============  ================================================================

How the Message maps, and the choices made:

- to/cc/bcc become one recipient each. SparkPost writes each recipient's own copy, so
  whenever there is more than one recipient every one gets `header_to` = the whole To
  list (everybody sees the same To header, as with any other ESP); cc addresses are
  also written to `content.headers.CC`; bcc ones appear in no header.
- Addresses in header strings (`header_to`, `CC`, `reply_to`) are written by mailmux:
  non-ASCII display names as RFC 2047 encoded words, names with specials quoted, IDN
  domains in punycode. The sender and the recipients' `address.name` go as objects,
  which SparkPost encodes itself.
- Tags become every recipient's `tags` (SparkPost's labels, returned in webhook events);
  `campaign_id` is left to the account, since it holds one name and mailmux tags are a
  set of labels. Metadata becomes the transmission's `metadata`.
- Inline attachments become `content.inline_images` named by their content id (what
  the HTML's `cid:` refers to; SparkPost has no place for their filename). A content id
  on a non-inline attachment is not carried either: SparkPost attachments have none.
- `options.perform_substitutions` is false: SparkPost would otherwise run its template
  language over the bodies and turn a literal `{{…}}` into an empty string. Headers go
  through that engine regardless, so header text containing `{{` is refused below.
- `options.transactional` follows the traffic class (`otp`, `transactional` → true,
  `bulk` → false, other classes → the account default): it decides whether a
  recipient's unsubscribe from bulk mail also stops this message.
- A message with `raw_mime` goes as `content.email_rfc822`, unchanged; recipients,
  tags, metadata and options still come from the Message.
- A message without a To recipient (cc and/or bcc only) goes as `email_rfc822` too,
  rendered by `mailmux.mime`: SparkPost writes each copy's To header itself (the
  recipient's own address unless `header_to` says otherwise), so a cc-only message
  would show each cc recipient in To as well as in Cc. The MIME keeps the headers as
  composed — Cc, or
  `To: undisclosed-recipients:;` when there is only bcc, and never Bcc — and every
  address is a recipient without `header_to`, the way SparkPost's own RFC 822 sending
  example takes To, Cc and Bcc apart.
- SparkPost takes no idempotency key: neither the message id nor the caller's key is
  sent, and a retry after an ambiguous attempt may be sent twice.

What SparkPost cannot carry raises `UnsupportedFeature` before any request: an empty
subject or no text/HTML body (unless sent as MIME), MIME that is not UTF-8, `{{` in a
subject, header or display name, more than 10 distinct tags (SparkPost ignores the
rest), metadata over 10 KB, an attachment filename or inline content id over 255 bytes,
two inline images with one content id, an inline attachment without a content id, and
a request over 20 MB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from email.charset import Charset
from http import HTTPStatus
from typing import Any

import orjson

from mailmux.addresses import ascii_email
from mailmux.message import Address, Attachment, Message, Original
from mailmux.mime import render_mime
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

MAX_TAGS = 10  # per recipient; SparkPost silently ignores the rest
MAX_METADATA_BYTES = 10 * 1024
MAX_NAME_BYTES = 255  # attachment filename, inline image name
MAX_REQUEST_BYTES = 20 * 1024 * 1024
#: Extended error codes that a 400 uses for account trouble rather than a bad message.
CONFIG_CODES = frozenset({"7000", "7001", "1910", "2009", "2010", "2011", "2012"})
RETRY_CODES = frozenset({"1502"})
#: `options.transactional` per traffic class; other classes keep the account default.
TRANSACTIONAL = {"otp": True, "transactional": True, "bulk": False}
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_UTF8 = Charset("utf-8")
_REASON_CHARS = 300


class SparkPostVendor(HttpVendor):
    """A SparkPost account; `base_url` may point at the EU host or an emulator."""

    kind = "sparkpost"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        base_url: str = "https://api.sparkpost.com",
    ) -> None:
        super().__init__(name, transport)
        if not api_key:
            raise ValueError(f"vendor {name!r}: SparkPost needs an api_key")
        self._url = base_url.rstrip("/") + "/api/v1/transmissions"
        self._headers = {
            "Authorization": api_key,  # the raw key: SparkPost takes no "Bearer"
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        #: Wall clock (Retry-After may be an HTTP date; the Date of a message rendered to
        #: MIME); tests replace it.
        self.clock: Callable[[], float] = time.time

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        body = json_body(_payload(message, self.clock()))
        if len(body) > MAX_REQUEST_BYTES:
            raise UnsupportedFeature(
                f"request of {len(body) / 2**20:.1f} MB; SparkPost takes at most 20 MB"
            )
        return HttpRequest("POST", self._url, self._headers, body)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's transmission, unchanged, under this vendor's key. SparkPost has no
        idempotency key, so none is added (a retry after an ambiguous attempt may repeat)."""
        headers = {**self._headers, "Content-Type": original.content_type or "application/json"}
        return HttpRequest("POST", self._url, headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        data = _json(response.body)
        if 200 <= status < 300:
            return _accepted(status, data)
        errors = _errors(data)
        detail = _detail(errors, response)
        codes = {str(error.get("code")) for error in errors}
        if status == 400:
            if codes & CONFIG_CODES:
                return AttemptResult(
                    Outcome.VENDOR_CONFIG, status=status, reason=f"account not set up: {detail}"
                )
            if codes & RETRY_CODES:
                return AttemptResult(Outcome.RETRIABLE, status=status, reason=detail)
            return AttemptResult(Outcome.PERMANENT, status=status, reason=detail)
        if status == 422:
            return AttemptResult(Outcome.PERMANENT, status=status, reason=detail)
        if status == 413:
            return AttemptResult(
                Outcome.UNSUPPORTED, status=status, reason=f"{self.kind}: too large: {detail}"
            )
        if status in (420, 429):
            what = "sending limit of the plan reached (quota)" if status == 420 else "rate limited"
            return AttemptResult(
                Outcome.RATE_LIMITED,
                status=status,
                reason=f"{what}: {detail}",
                retry_after=self._retry_after(response),
            )
        return fallback_outcome(status, detail, _CONFIG_REASONS, self._retry_after(response))

    def _retry_after(self, response: HttpResponse) -> float | None:
        return parse_retry_after(response.headers.get("retry-after"), self.clock())


_CONFIG_REASONS = {
    401: "API key rejected",
    403: "forbidden (the API key lacks the Transmissions permission, or no licence)",
    404: "not found; check base_url",
    405: "method not allowed; check base_url",
    406: "not acceptable; check base_url and proxies",
    415: "unsupported media type; check base_url and proxies",
}


# -- Message → request -------------------------------------------------------------


def _payload(message: Message, now: float) -> dict[str, Any]:
    """The transmission; empty fields are left out, never sent as empty values."""
    raw = message.raw_mime
    if raw is None and not message.to:  # see the module docstring
        _check_header_text(message)
        raw = render_mime(message, now=now)
    recipients = _recipients(message, header_to=raw is None)
    tags = _tags(message.tags)
    if tags:
        for recipient in recipients:
            recipient["tags"] = tags
    options: dict[str, bool] = {"perform_substitutions": False}
    transactional = TRANSACTIONAL.get(message.traffic_class)
    if transactional is not None:
        options["transactional"] = transactional
    payload: dict[str, Any] = {
        "options": options,
        "recipients": recipients,
        "content": _content(message) if raw is None else {"email_rfc822": _rfc822(raw)},
    }
    if message.metadata:
        payload["metadata"] = _metadata(message.metadata)
    return payload


def _recipients(message: Message, *, header_to: bool) -> list[dict[str, Any]]:
    """Every recipient; with `header_to` (content built by SparkPost, which writes each
    copy's To header), each of several shows the whole To list. MIME has its own."""
    everyone = (*message.to, *message.cc, *message.bcc)
    shown_to = None
    if header_to and len(everyone) > 1:
        shown_to = ", ".join(_header_address(a) for a in message.to)
    recipients = []
    for address in everyone:
        entry = {"email": _wire_email(address)}
        if address.name:
            entry["name"] = address.name
        if shown_to is not None:
            entry["header_to"] = shown_to
        recipients.append({"address": entry})
    return recipients


def _content(message: Message) -> dict[str, Any]:
    if not message.subject:
        raise UnsupportedFeature("empty subject: SparkPost requires content.subject")
    if not (message.text or message.html):
        raise UnsupportedFeature("no text or HTML body: SparkPost requires one")
    _check_header_text(message)
    content: dict[str, Any] = {"from": _sender(message.sender), "subject": message.subject}
    if message.text:
        content["text"] = message.text
    if message.html:
        content["html"] = message.html
    if message.reply_to:
        content["reply_to"] = ", ".join(_header_address(a) for a in message.reply_to)
    headers = dict(message.headers)
    if message.cc:
        headers["CC"] = ", ".join(_header_address(a) for a in message.cc)
    if headers:
        content["headers"] = headers
    attachments = [_attachment(a) for a in message.attachments if not a.inline]
    if attachments:
        content["attachments"] = attachments
    inline_images = _inline_images([a for a in message.attachments if a.inline])
    if inline_images:
        content["inline_images"] = inline_images
    return content


def _rfc822(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnsupportedFeature(
            "raw MIME that is not UTF-8: SparkPost takes email_rfc822 as a UTF-8 string"
        ) from err
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    if "{{" in head:
        raise UnsupportedFeature(
            "'{{' in a header of the raw MIME: SparkPost would treat it as template syntax"
        )
    return text


def _check_header_text(message: Message) -> None:
    """Refuse `{{` where SparkPost's template engine would read it (every header)."""
    named = (message.sender, *message.to, *message.cc, *message.reply_to)
    texts = [
        ("subject", message.subject),
        *((f"header {name}", f"{name}: {value}") for name, value in message.headers.items()),
        *((f"display name of {a.email}", a.name or "") for a in named),
    ]
    for where, text in texts:
        if "{{" in text:
            raise UnsupportedFeature(
                f"'{{{{' in the {where}: SparkPost would treat it as template syntax"
            )


def _wire_email(address: Address) -> str:
    """The address with an IDN domain in punycode (SparkPost does not convert it)."""
    return ascii_email(address.email) or address.email


def _sender(address: Address) -> dict[str, str]:
    if address.name:
        return {"email": _wire_email(address), "name": address.name}
    return {"email": _wire_email(address)}


def _header_address(address: Address) -> str:
    """One mailbox for a header string: RFC 2047 for non-ASCII names, quotes for specials."""
    addr = _wire_email(address)
    name = address.name
    if not name:
        return addr
    if not name.isascii():
        return f"{_UTF8.header_encode(name)} <{addr}>"
    if _SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{addr}>'
    return f"{name} <{addr}>"


def _attachment(attachment: Attachment) -> AttachmentEntry:
    _check_name_length(attachment.filename, "attachment filename")
    return {
        "name": attachment.filename,
        "type": attachment.content_type,
        "data": base64_text(attachment.content),
    }


def _inline_images(attachments: list[Attachment]) -> list[AttachmentEntry]:
    images: list[AttachmentEntry] = []
    seen: set[str] = set()
    for attachment in attachments:
        cid = attachment.content_id
        if not cid:
            raise UnsupportedFeature(
                f"inline attachment {attachment.filename!r} has no content id;"
                " SparkPost names inline images by it"
            )
        _check_name_length(cid, "inline content id")
        if cid in seen:
            raise UnsupportedFeature(f"two inline images with content id {cid!r}")
        seen.add(cid)
        images.append(
            {
                "name": cid,
                "type": attachment.content_type,
                "data": base64_text(attachment.content),
            }
        )
    return images


def _check_name_length(name: str, what: str) -> None:
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        raise UnsupportedFeature(
            f"{what} {name[:20]!r}… is {size} bytes; SparkPost takes at most {MAX_NAME_BYTES}"
        )


def _tags(tags: tuple[str, ...]) -> list[str]:
    unique = list(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        raise UnsupportedFeature(
            f"{len(unique)} tags; SparkPost keeps at most {MAX_TAGS} per recipient"
        )
    return unique


def _metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    data = dict(metadata)
    size = len(orjson.dumps(data))
    if size > MAX_METADATA_BYTES:
        raise UnsupportedFeature(
            f"metadata of {size} bytes; SparkPost takes at most {MAX_METADATA_BYTES}"
        )
    return data


# -- answer → outcome ----------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _accepted(status: int, data: Any) -> AttemptResult:
    results = data.get("results") if isinstance(data, dict) else None
    transmission = results.get("id") if isinstance(results, dict) else None
    if not isinstance(results, dict) or not _is_id(transmission):
        return AttemptResult(
            Outcome.AMBIGUOUS,
            status=status,
            reason=f"HTTP {status} without a transmission id; check base_url",
        )
    accepted = _count(results.get("total_accepted_recipients"))
    rejected = _count(results.get("total_rejected_recipients"))
    # Rejected recipients' errors sit in results; a 2000 "created with validation
    # errors" answer puts its errors next to results.
    found = (*_errors({"errors": results.get("rcpt_to_errors")}), *_errors(data))
    notes = "; ".join(map(_error_text, found))
    message_id = str(transmission)
    if rejected and not accepted:
        reason = f"all {rejected} recipients rejected" + (f": {notes}" if notes else "")
        return AttemptResult(
            Outcome.PERMANENT, vendor_message_id=message_id, status=status, reason=_clip(reason)
        )
    if rejected:
        summary = f"{rejected} of {accepted + rejected} recipients rejected"
        notes = f"{summary}: {notes}" if notes else summary
    return AttemptResult(
        Outcome.ACCEPTED, vendor_message_id=message_id, status=status, reason=_clip(notes)
    )


def _is_id(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _errors(data: Any) -> list[dict[str, Any]]:
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, dict) and isinstance(e.get("message"), str)]


def _error_text(error: Mapping[str, Any]) -> str:
    text = str(error["message"])
    description = error.get("description")
    if isinstance(description, str) and description:
        text = f"{text}: {description}"
    code = error.get("code")
    return f"{text} (code {code})" if code not in (None, "") else text


def _detail(errors: list[dict[str, Any]], response: HttpResponse) -> str:
    """SparkPost's own error text, else a body excerpt, else the status phrase."""
    text = "; ".join(map(_error_text, errors)) or excerpt(response.body)
    if not text:
        try:
            text = HTTPStatus(response.status).phrase
        except ValueError:
            text = f"HTTP {response.status}"
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
