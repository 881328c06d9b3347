"""SendGrid's v3 Mail Send as mailmux serves it: `POST /v3/mail/send`, `Authorization: Bearer`.

The official SDK (`SendGridAPIClient(key, host=...)`) joins its host and
`/v3/mail/send` as strings, so a host given with a trailing slash asks for
`//v3/mail/send`; that path is served too.

Each personalization is a separate email (`parsing`), so a request becomes
one Message per personalization. A request of one personalization keeps its
body byte for byte for a SendGrid vendor to pass through; one of several
gives each Message the request narrowed to its personalization (re-encoded),
which SendGrid sends as that one email. Replies and errors: `replies`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from mailmux.message import FieldError, Message, MessageLimits, Original
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeRequest,
)
from mailmux.vendors.sendgrid import replies
from mailmux.vendors.sendgrid.parsing import Draft, decode, read

KIND = "sendgrid"
SEND = "send"
ENDPOINTS = (
    Endpoint(SEND, "POST", "/v3/mail/send"),
    Endpoint(SEND, "POST", "//v3/mail/send"),  # the SDK's host with a trailing slash
)


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of `Authorization: Bearer <key>`, None when there is none."""
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def drafts(body: bytes, limits: MessageLimits) -> tuple[dict[str, Any], list[Draft]]:
    """The decoded body and its drafts (ShapeError when SendGrid would refuse it)."""
    doc = decode(body)
    return doc, read(doc, limits)


class SendGridInbound:
    """The SendGrid shape; stateless, so one instance serves every request."""

    kind = KIND
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def credential(self, request: ShapeRequest) -> Credential | None:
        key = bearer_key(request.headers)
        return None if key is None else Credential(key)

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        doc = decode(request.body)
        content_type = request.headers.get("Content-Type", "application/json")
        personalizations = doc.get("personalizations")
        several = isinstance(personalizations, list) and len(personalizations) > 1

        def original(index: int, exclusive: tuple[str, ...]) -> Original:
            body = request.body
            if several:  # the request narrowed to this personalization
                assert isinstance(personalizations, list)
                body = orjson.dumps({**doc, "personalizations": [personalizations[index]]})
            return Original(KIND, SEND, body, content_type, exclusive)

        return [draft.message for draft in read(doc, limits, original)]

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        return replies.reply(results)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return replies.failure(failure, message, errors)
