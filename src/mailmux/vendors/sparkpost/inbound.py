"""SparkPost's Transmissions API as mailmux serves it: `POST /api/v1/transmissions`.

The key is where SparkPost's clients put it: the bare key in `Authorization`
(the official SDK), or HTTP Basic with the key as user name. The body is read
by `transmission` (one Message per recipient group, see there) and answered by
`replies` (one answer per transmission). A transmission that is one Message
keeps its body as it came for a SparkPost vendor; one that is several gives
each Message the transmission narrowed to its recipients.

Where this deviates from SparkPost: SparkPost would accept a transmission in
which some recipients are invalid (200, with `rcpt_to_errors`); mailmux refuses
it whole, because a Message is valid or not before it is routed. And a To
recipient other than the first one of an SDK `cc=` call does not see the CC
line a translated message cannot show without also delivering to it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import replace

import orjson

from mailmux.message import FieldError, InvalidMessage, Message, MessageLimits, Original
from mailmux.vendors.inbound import (
    Credential,
    Endpoint,
    Failure,
    ItemResult,
    Reply,
    ShapeError,
    ShapeRequest,
)
from mailmux.vendors.sparkpost import replies
from mailmux.vendors.sparkpost.transmission import read_transmission

KIND = "sparkpost"
ENDPOINT = "transmissions"
PATH = "/api/v1/transmissions"
ENDPOINTS = (Endpoint(ENDPOINT, "POST", PATH),)


class SparkPostInbound:
    """The SparkPost shape; stateless, so one instance serves every request."""

    kind = KIND
    endpoints: Sequence[Endpoint] = ENDPOINTS

    def credential(self, request: ShapeRequest) -> Credential | None:
        key = api_key(request.headers.get("Authorization", ""))
        return None if key is None else Credential(key)

    def parse(self, request: ShapeRequest, *, now: float, limits: MessageLimits) -> list[Message]:
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError as err:
            raise ShapeError(Failure.INVALID_JSON, "Problems parsing request as json") from err
        if not isinstance(doc, dict):
            raise ShapeError(Failure.INVALID_JSON, "JSON object expected")
        try:
            reads, exclusive = read_transmission(doc, now=now, limits=limits)
        except InvalidMessage as err:
            raise ShapeError(Failure.INVALID_REQUEST, str(err.errors[0]), err.errors) from err
        content_type = request.headers.get("Content-Type", "application/json")
        messages = []
        for read in reads:
            body = request.body
            if len(reads) > 1:
                body = orjson.dumps({**doc, "recipients": read.recipients})
            fields = tuple(sorted({*exclusive, *read.exclusive}))
            original = Original(KIND, ENDPOINT, body, content_type, fields)
            messages.append(replace(read.message, original=original))
        return messages

    def reply(self, request: ShapeRequest, results: Sequence[ItemResult]) -> Reply:
        return replies.results_reply(results)

    def failure(
        self, endpoint: str, failure: Failure, message: str, errors: Sequence[FieldError] = ()
    ) -> Reply:
        return replies.failure_reply(failure, message, errors)


def api_key(authorization: str) -> str | None:
    """The key from `<key>` or `Basic base64(<key>:)`; None when there is none."""
    value = authorization.strip()
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            user = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    if not value or " " in value:  # e.g. "Bearer …": not a SparkPost key
        return None
    return value
