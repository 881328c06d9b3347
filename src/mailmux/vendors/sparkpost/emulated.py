"""SparkPost's Transmissions API as the emulator serves it, through the inbound shape.

The emulator checks a request exactly as mailmux's SparkPost ingress reads it
(`SparkPostInbound.parse`), answers refusals with `replies.failure_reply` and
successes with SparkPost's `results`, so there is one parser of SparkPost's
contract. Any non-empty key is accepted (raw, or Basic with the key as user
name). The request body is stored as received.

`accepted` reports the recipient count the preceding `receive` counted: the
server calls the two back to back with no await between them, so no other
request can come in between.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response
from mailmux.message import MessageLimits, recipient_count
from mailmux.vendors.inbound import Failure, ShapeError, ShapeRequest
from mailmux.vendors.sparkpost import replies
from mailmux.vendors.sparkpost.inbound import ENDPOINT, ENDPOINTS, SparkPostInbound, api_key

#: SparkPost's own bounds: 20 MB of content, recipients limited by the plan only.
LIMITS = MessageLimits(
    max_message_bytes=20 * 1024 * 1024,
    max_attachment_bytes=20 * 1024 * 1024,
    max_recipients=100_000,
)


class SparkPostShape:
    """The SparkPost shape: one instance serves every request."""

    routes: Sequence[Route] = tuple((e.method, e.path) for e in ENDPOINTS)

    def __init__(self) -> None:
        self._inbound = SparkPostInbound()
        self._recipients = 0  # counted by `receive`, reported by the next `accepted`

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = api_key(request.headers.get("Authorization", ""))
        if key is None:
            return reply_response(replies.failure_reply(Failure.UNAUTHORIZED, "no API key"))
        raw = await request.read()
        shaped = ShapeRequest.of(ENDPOINT, request, raw)
        try:
            messages = self._inbound.parse(shaped, now=time.time(), limits=LIMITS)
        except ShapeError as err:
            return reply_response(replies.failure_reply(err.failure, err.message, err.errors))
        self._recipients = sum(recipient_count(m) for m in messages)
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        count, self._recipients = self._recipients, 0
        return reply_response(replies.success(message_id, count))

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        response = reply_response(replies.fault_reply(status))
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"…{key[-4:]}" if len(key) > 8 else "…"}
    for name in ("content-type", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded
