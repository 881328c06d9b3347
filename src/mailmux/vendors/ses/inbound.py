"""Amazon SES v2 SendEmail (`POST /v2/email/outbound-emails`) as mailmux serves it.

A boto3 `sesv2` client with `endpoint_url` set to mailmux signs with its
access key id (the client's name) and secret access key (the client's key);
`sigv4` verifies the signature. `sendemail` reads the body into a Message and
names the fields only SES can carry. One request is one message, so there is
no per-item answer: the reply is SendEmail's own (`replies`), queued being a
success as everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import orjson

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
from mailmux.vendors.ses import replies, sendemail, sigv4

KIND = "ses"
ENDPOINT = Endpoint("outbound-emails", "POST", "/v2/email/outbound-emails")


class SesInbound:
    """The SES v2 shape; stateless but for its clock (the SigV4 time window)."""

    kind = KIND
    endpoints: Sequence[Endpoint] = (ENDPOINT,)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def credential(self, request: ShapeRequest) -> Credential | None:
        return sigv4.credential(request, self.clock())

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as err:
            why = f"The request body is not valid JSON: {err}"
            raise ShapeError(Failure.INVALID_JSON, why) from None
        message, metadata = sendemail.read(body, now, limits)
        original = Original(
            KIND,
            ENDPOINT.name,
            request.body,
            request.headers.get("Content-Type", "application/json"),
            sendemail.exclusive(body),
        )
        return [replace(message, metadata=metadata, original=original)]

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        """SendEmail's answer: queued is sent, as SES queues too; one result per request."""
        (result,) = results
        if result.accepted:
            return replies.sent(result.id)
        if result.expired:
            why = f"the message's deadline passed before it could be sent ({result.id})"
            return replies.failure(Failure.EXPIRED, why)
        why = f"{result.reason or 'every vendor refused the message'} ({result.id})"
        return replies.failure(Failure.REJECTED, why)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return replies.failure(failure, message, errors)
