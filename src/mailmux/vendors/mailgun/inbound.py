"""Mailgun's send API as mailmux serves it: a Mailgun form in, one Message out.

`POST /v3/{domain}/messages` and `POST /v3/{domain}/messages.mime`, with
HTTP Basic auth `api:<key>` (the user is always `api`; the key is the client
key). The form (multipart, or urlencoded as the Python SDK sends one without
files; see `form`) maps onto a Message:

- `from`; `to`, `cc`, `bcc`, each repeatable and each value an address list
  (`"Ana <a@x.org>, b@x.org"`; a quoted name may hold a comma); a repeated
  address in one of them counts once, as Mailgun ignores duplicates.
- `subject`, `text`, `html`; `attachment` and `inline` file parts (an inline
  part's filename is its content id, what the HTML's `cid:` names).
- `h:<Name>` custom headers, `h:Reply-To` the reply-to list; `v:<key>` and
  the JSON object of `h:X-Mailgun-Variables` metadata (a `v:` wins; a
  non-string JSON value is kept as its JSON text); `o:tag` tags.
- `/messages.mime`: `to` is the envelope (bcc included) and the `message`
  file part the MIME, kept byte for byte as `raw_mime` (`mailmux.mime`).

A request is always one Message, Mailgun's one `id`. That holds for batch
sending too (`recipient-variables`: one email per `to`, personalized by
Mailgun): it is exclusive, so only a Mailgun vendor sends it, whole.

Exclusive (a vendor of another ESP is `unsupported`): `amp-html`,
`template` and `t:*`, `recipient-variables`, scheduling (`o:deliverytime`,
`o:deliverytime-optimize-period`, `o:time-zone-localize`), `o:testmode` and
`o:require-tls` unless off (a translated send must not make a test real,
nor drop a TLS guarantee), an `h:` header mailmux would write itself
(`h:Message-Id`, …), an `h:` or `v:` field given twice, and any field not
named here. Dropped when translating: tracking, DKIM, sending IP and
archiving options (`_DROPPABLE`), which change how, not what, is sent.

Refused with Mailgun's 400 and `message`: what Mailgun refuses (missing
`from`, `to`, `subject`, body; an address that is not one) and the rules
every ingress shares (`mailmux.message.Checker`: line breaks in a subject,
header name or value, display name, filename; sizes; recipient count).
Every problem is reported in the one `message`, Mailgun's wording first.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import replace

from mailmux.message import FieldError, Message, MessageLimits, Original
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)
from mailmux.vendors.mailgun.fields import FormReader
from mailmux.vendors.mailgun.form import FormError, FormField, read_form
from mailmux.vendors.mailgun.outbound import MESSAGES, MIME
from mailmux.vendors.mailgun.replies import error, failure_reply, queued

KIND = "mailgun"
ENDPOINTS = (
    Endpoint(MESSAGES, "POST", "/v3/{domain}/messages"),
    Endpoint(MIME, "POST", "/v3/{domain}/messages.mime"),
)


class MailgunInbound:
    """The Mailgun shape; stateless, so one instance serves every request."""

    kind = KIND
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def credential(self, request: ShapeRequest) -> Credential | None:
        """The key of `Authorization: Basic api:<key>`; None for anything else."""
        key = basic_key(request.headers.get("Authorization", ""))
        return None if key is None else Credential(key)

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        return [self.message(request, self.form(request), now=now, limits=limits)]

    @staticmethod
    def form(request: ShapeRequest) -> list[FormField]:
        """The request's form; ShapeError (INVALID_JSON) when the body is not one."""
        try:
            return read_form(request.body, request.headers.get("Content-Type", ""))
        except FormError as err:
            raise ShapeError(Failure.INVALID_JSON, str(err)) from err

    @staticmethod
    def message(
        request: ShapeRequest, form: Sequence[FormField], *, now: float, limits: MessageLimits
    ) -> Message:
        """The one Message of an already read form (the emulator reads it once)."""
        reader = FormReader(limits)
        message = reader.mime(form, now) if request.endpoint == MIME else reader.parts(form)
        if reader.errors or message is None:
            raise ShapeError(Failure.INVALID_REQUEST, reader.summary(), reader.errors)
        original = Original(
            KIND,
            request.endpoint,
            request.body,
            request.headers.get("Content-Type", ""),
            tuple(dict.fromkeys(reader.exclusive)),
        )
        return replace(message, original=original)

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        """Queued with mailmux's id at the request's domain, or Mailgun's 400."""
        domain = request.params.get("domain", "")
        for result in results:
            if result.accepted:
                return queued(f"{result.id}@{domain}")
        first = results[0]
        if first.expired:
            return error(400, "Not sent: the deadline passed before a vendor took the message")
        return error(400, f"Not sent: every vendor refused the message: {first.reason}")

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return failure_reply(failure, message)


def basic_key(authorization: str) -> str | None:
    """The key of `Basic api:<key>` (Mailgun's user is always `api`), else None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, key = decoded.partition(":")
    return key if user == "api" and key else None
