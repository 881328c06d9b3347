"""Mailgun (`POST {base_url}/v3/{domain}/messages[.mime]`): Message → request, answer → outcome.

A parsed message goes to `/messages` as multipart/form-data: `from`, one
`to`/`cc`/`bcc` field per recipient, `subject`, `text`, `html`, custom
headers and reply-to as `h:` fields, tags as repeated `o:tag`, metadata as
`v:` variables, then `attachment` and `inline` file parts (an inline part's
filename is its content id: that is what Mailgun's `cid:` refers to). A
message that arrived as raw MIME goes to `/messages.mime` untouched, as the
`message` file part, with every envelope recipient (to, cc and bcc) as a
`to` field and tags and metadata as `o:tag` and `v:` fields; its headers
are already in the MIME, so no `h:` field is sent.

A parsed message without a To recipient (cc and/or bcc only) cannot go to
`/messages`, which requires `to` and would write every `to` into the To
header. It goes to `/messages.mime` instead, rendered by `mailmux.mime`: the
MIME holds From, Cc, Reply-To and the custom headers (a bcc-only message says
`To: undisclosed-recipients:;`) and never Bcc, while the `to` fields are only
the envelope: for a MIME message Mailgun wants every To, Cc and Bcc recipient
there and leaves the headers as they are. One copy reaches them all, and no
bcc recipient sees another.

The multipart body is encoded here, by hand: `build_request` must stay a
pure, synchronous function, and aiohttp's `FormData` and `MultipartWriter`
only serialize through an async writer inside a loop. A small body is one
bytes object; from 64 KiB on it is a `StreamedBody` whose parts are the
encoded text and, in between, each file's content as it is (never copied).
The encoding is the one browsers and `requests` use (RFC 7578): UTF-8
values, `"`/CR/LF in names and filenames percent-escaped, a random
128-bit boundary (it cannot occur in the content except by a 2⁻¹²⁸
accident, so the content is not searched for it).

How Mailgun's answers are classified, and why:

======  ==============  ================================================================
status  outcome         why
======  ==============  ================================================================
2xx     accepted        Only with Mailgun's `{"id", "message"}` body; the id is the
                        Message-ID, kept without its angle brackets (the form
                        Mailgun's events and webhooks use).
2xx     vendor_config   Any other 2xx body: a wrong `base_url` can reach a page that
                        answers 200 ("Mailgun Magnificent API") without sending.
400     permanent       Mailgun refused the message's fields; resending fails again.
                        Except "… is not allowed to send" (sandbox domain, account
                        not activated, as seen in public reports): vendor_config.
413     permanent       Too large for Mailgun (25 MB); the message must change.
401     vendor_config   The API key is wrong (Mailgun answers a bare "Forbidden").
403     vendor_config   The key may not send for this domain, or the account is
                        restricted: nothing about the message.
404     vendor_config   "Domain not found", or a wrong `base_url`.
405
3xx     vendor_config   A redirect that was not followed: check `base_url`.
429     rate_limited    Throttled; `retry_after` from `Retry-After`. Mailgun
                        documents no quota-specific status or reset header.
5xx     retriable       Mailgun's trouble; `Retry-After` is kept when given.
other   retriable       An undocumented status must not fail the message for good.
======  ==============  ================================================================

What Mailgun cannot carry raises `UnsupportedFeature` before any request: no
text or HTML body on a parsed message, more than 1000 recipients, more than
10 distinct tags (the official mailgun-ruby's limit), `o:`/`h:`/`v:` fields
over 16 KB in total, and a request over 25 MB. Mailgun takes no idempotency
key: neither the message id nor the caller's key is sent, and a retry after
an ambiguous attempt may be sent twice.

A message that came in through mailmux's own Mailgun API (`inbound`) is
passed through: the caller's form goes to the same endpoint under this
vendor's domain, byte for byte with its own Content-Type (and boundary),
only the Basic credentials being this vendor's.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from urllib.parse import quote

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
from mailmux.vendors.body import Body, joined

#: The endpoints' names in `Original.endpoint` (see `inbound`).
MESSAGES = "messages"
MIME = "messages.mime"

MAX_RECIPIENTS = 1000
MAX_TAGS = 10
MAX_OPTIONS_BYTES = 16 * 1024  # every o:, h: and v: field, names and values
MAX_REQUEST_BYTES = 25 * 1024 * 1024
_OPTION_PREFIXES = ("o:", "h:", "v:")
_REASON_CHARS = 300
#: RFC 5322 `specials`: a display name holding one must be quoted, or Mailgun would
#: read it as address syntax (a `,` would split one recipient in two).
_SPECIALS = frozenset('()<>[]:;@\\,."')

#: A form field: (name, value).
Field = tuple[str, str]
#: A file part: (field name, filename, content type or None, content).
FilePart = tuple[str, str, str | None, bytes]


class MailgunVendor(HttpVendor):
    """A Mailgun sending domain; `base_url` may point at the EU host or an emulator."""

    kind = "mailgun"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        api_key: str,
        domain: str,
        base_url: str = "https://api.mailgun.net",
    ) -> None:
        super().__init__(name, transport)
        if not api_key:
            raise ValueError(f"vendor {name!r}: Mailgun needs an api_key")
        if not domain or "/" in domain:
            raise ValueError(f"vendor {name!r}: Mailgun needs a sending domain like mg.example.com")
        # Like the official SDK, take the host with or without the API version.
        root = base_url.rstrip("/").removesuffix("/v3")
        prefix = f"{root}/v3/{quote(domain, safe='')}"
        self._messages_url = prefix + "/messages"
        self._mime_url = prefix + "/messages.mime"
        token = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        #: Wall clock, for Retry-After given as an HTTP date and the Date of a message
        #: rendered to MIME; tests replace it.
        self.clock: Callable[[], float] = time.time
        #: Makes the multipart boundary; tests replace it to compare bodies byte for byte.
        self.boundary: Callable[[], str] = _random_boundary

    def build_request(self, message: Message, message_id: str) -> HttpRequest:
        if message.raw_mime is not None:
            url = self._mime_url
            fields, files = _mime_form(message, message.raw_mime)
        elif not message.to:  # /messages requires a to: see the module docstring
            url = self._mime_url
            fields, files = _mime_form(message, _rendered(message, self.clock()))
        else:
            url = self._messages_url
            fields, files = _form(message)
        _check_options(fields)
        boundary = self.boundary()
        body = encode_multipart(fields, files, boundary)
        if len(body) > MAX_REQUEST_BYTES:
            raise UnsupportedFeature(
                f"request of {len(body) / 2**20:.1f} MB; Mailgun takes at most 25 MB"
            )
        headers = {
            "Authorization": self._authorization,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json",
        }
        return HttpRequest("POST", url, headers, body)

    def passthrough_request(self, original: Original, message_id: str) -> HttpRequest:
        """The caller's Mailgun form, unchanged, to this vendor's domain with its key."""
        url = self._mime_url if original.endpoint == MIME else self._messages_url
        headers = {
            "Authorization": self._authorization,
            "Content-Type": original.content_type,
            "Accept": "application/json",
        }
        return HttpRequest("POST", url, headers, original.body)

    def parse_response(self, response: HttpResponse) -> AttemptResult:
        status = response.status
        if 200 <= status < 300:
            return _accepted(response)
        detail = _detail(response)
        if status in (400, 413):
            if "is not allowed to send" in detail:
                reason = f"the domain or account may not send: {detail}"
                return AttemptResult(Outcome.VENDOR_CONFIG, status=status, reason=reason)
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


_CONFIG_REASONS = {
    401: "API key rejected",
    403: "forbidden (the key may not send for this domain, or the account is restricted)",
    404: "not found (unknown sending domain, or wrong base_url)",
    405: "method not allowed; check base_url",
}


def _random_boundary() -> str:
    return f"mailmux-{secrets.token_hex(16)}"


def _form(message: Message) -> tuple[list[Field], list[FilePart]]:
    """The `/messages` fields and files; empty bodies and lists are left out."""
    _check_body(message)
    _check_recipients(message)
    fields: list[Field] = [("from", _mailbox(message.sender))]
    for kind, group in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc)):
        fields.extend((kind, _mailbox(a)) for a in group)
    fields.append(("subject", message.subject))  # required by Mailgun, even when empty
    if message.text:
        fields.append(("text", message.text))
    if message.html:
        fields.append(("html", message.html))
    if message.reply_to:
        fields.append(("h:Reply-To", ", ".join(_mailbox(a) for a in message.reply_to)))
    fields.extend((f"h:{name}", value) for name, value in message.headers.items())
    fields.extend(_tags_and_variables(message))
    files = [_file_part(a) for a in message.attachments]
    return fields, files


def _check_body(message: Message) -> None:
    if not (message.text or message.html):
        raise UnsupportedFeature("no text or HTML body: Mailgun requires one")


def _rendered(message: Message, now: float) -> bytes:
    """A parsed message without To as MIME for `/messages.mime` (no Bcc in it)."""
    _check_body(message)
    return render_mime(message, now=now)


def _mime_form(message: Message, raw: bytes) -> tuple[list[Field], list[FilePart]]:
    """The `/messages.mime` fields: the envelope, tags, metadata and the MIME itself."""
    _check_recipients(message)
    everyone = (*message.to, *message.cc, *message.bcc)
    if not everyone:
        raise UnsupportedFeature("no recipient: Mailgun's messages.mime requires at least one")
    fields: list[Field] = [("to", _addr_spec(a)) for a in everyone]
    fields.extend(_tags_and_variables(message))
    return fields, [("message", "message.mime", "message/rfc822", raw)]


def _check_recipients(message: Message) -> None:
    count = len(message.to) + len(message.cc) + len(message.bcc)
    if count > MAX_RECIPIENTS:
        raise UnsupportedFeature(
            f"{count} recipients; Mailgun takes at most {MAX_RECIPIENTS} per request"
        )


def _tags_and_variables(message: Message) -> list[Field]:
    tags = list(dict.fromkeys(message.tags))  # unique, order kept
    if len(tags) > MAX_TAGS:
        raise UnsupportedFeature(f"{len(tags)} tags; Mailgun takes at most {MAX_TAGS}")
    fields: list[Field] = [("o:tag", tag) for tag in tags]
    fields.extend((f"v:{key}", value) for key, value in message.metadata.items())
    return fields


def _check_options(fields: Iterable[Field]) -> None:
    size = sum(
        len(name.encode()) + len(value.encode())
        for name, value in fields
        if name.startswith(_OPTION_PREFIXES)
    )
    if size > MAX_OPTIONS_BYTES:
        raise UnsupportedFeature(
            f"headers, tags and metadata of {size} bytes; Mailgun takes at most"
            f" {MAX_OPTIONS_BYTES} bytes of o:, h: and v: fields"
        )


def _file_part(attachment: Attachment) -> FilePart:
    if attachment.inline:
        name = attachment.content_id or attachment.filename
        return ("inline", name, attachment.content_type, attachment.content)
    return ("attachment", attachment.filename, attachment.content_type, attachment.content)


def _addr_spec(address: Address) -> str:
    """The address as plain SMTP carries it (IDN domain in punycode) when it can be."""
    return ascii_email(address.email) or address.email


def _mailbox(address: Address) -> str:
    """`Name <addr>`, the name quoted when it holds address syntax (`,`, `<`, `"` …)."""
    addr = _addr_spec(address)
    name = address.name
    if not name:
        return addr
    if any(c in _SPECIALS for c in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def encode_multipart(fields: Iterable[Field], files: Iterable[FilePart], boundary: str) -> Body:
    """A multipart/form-data body (RFC 7578): text fields first, then the file parts.

    Each file's content is a part of its own, between the encoded text around
    it, so a large body goes out without its attachments being copied.
    """
    dash = f"--{boundary}\r\n".encode("ascii")
    parts: list[bytes] = []
    text: list[bytes] = []  # encoded since the last file content
    for name, value in fields:
        text += (dash, _disposition(name, None), b"\r\n", value.encode(), b"\r\n")
    for name, filename, content_type, content in files:
        text += (dash, _disposition(name, filename))
        if content_type:
            text.append(f"Content-Type: {content_type}\r\n".encode())
        text.append(b"\r\n")
        parts += (b"".join(text), content)
        text = [b"\r\n"]
    text.append(f"--{boundary}--\r\n".encode("ascii"))
    parts.append(b"".join(text))
    return joined(parts)


def _disposition(name: str, filename: str | None) -> bytes:
    line = f'Content-Disposition: form-data; name="{_escape(name)}"'
    if filename is not None:
        line += f'; filename="{_escape(filename)}"'
    return (line + "\r\n").encode()


def _escape(value: str) -> str:
    """A quoted multipart parameter the way browsers write it (HTML form encoding)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _accepted(response: HttpResponse) -> AttemptResult:
    try:
        data = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        data = None
    message_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(message_id, str) and message_id:
        return AttemptResult(
            Outcome.ACCEPTED,
            vendor_message_id=message_id.strip().removeprefix("<").removesuffix(">"),
            status=response.status,
        )
    return AttemptResult(
        Outcome.VENDOR_CONFIG,
        status=response.status,
        reason=(
            "answered without a message id, nothing shows it was sent (not Mailgun's send API;"
            f" check base_url): {excerpt(response.body) or 'empty body'}"
        ),
    )


def _detail(response: HttpResponse) -> str:
    """Mailgun's own `message`, else a body excerpt (401 is a bare "Forbidden"), else the
    status phrase."""
    try:
        data = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        data = None
    message = data.get("message") if isinstance(data, dict) else None
    text = message if isinstance(message, str) and message else excerpt(response.body)
    if not text:
        try:
            text = HTTPStatus(response.status).phrase
        except ValueError:
            text = f"HTTP {response.status}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
