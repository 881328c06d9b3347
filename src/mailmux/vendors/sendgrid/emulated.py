"""SendGrid's Mail Send as the emulator serves it, with the ingress's own parsing and replies.

Any non-empty Bearer key is taken (an emulator has no accounts); the body is
checked by the same `parsing` the ingress uses, with SendGrid's own limits
(30 MB, 1000 recipients), and refused with the same error bodies. What it
accepts is stored as received, not re-encoded. A request of several
personalizations is stored, and answered, as one: SendGrid's one id per
request. A sandbox request is stored and answered 202 like any other (real
SendGrid answers 200 and sends nothing).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response, status_phrase
from mailmux.message import MessageLimits
from mailmux.vendors.inbound import Failure, ShapeError
from mailmux.vendors.sendgrid import replies
from mailmux.vendors.sendgrid.inbound import ENDPOINTS, bearer_key, drafts
from mailmux.vendors.sendgrid.outbound import MAX_RECIPIENTS, MAX_REQUEST_BYTES

#: SendGrid's own bounds: the whole request under 30 MB, 1000 recipients.
LIMITS = MessageLimits(
    max_message_bytes=MAX_REQUEST_BYTES,
    max_attachment_bytes=MAX_REQUEST_BYTES,
    max_recipients=MAX_RECIPIENTS,
)


class SendGridShape:
    """The emulator's SendGrid; stateless, so one instance serves every request."""

    routes: Sequence[Route] = tuple((e.method, e.path) for e in ENDPOINTS)

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = bearer_key(request.headers)
        if key is None:
            return reply_response(replies.failure(Failure.UNAUTHORIZED, "no API key"))
        raw = await request.read()
        try:
            drafts(raw, LIMITS)
        except ShapeError as err:
            return reply_response(replies.failure(err.failure, err.message, err.errors))
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        return reply_response(replies.accepted(message_id))

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        response = reply_response(
            replies.errors(status, [(f"{status_phrase(status)} (emulated fault)", None)])
        )
        if retry_after is not None:
            seconds = max(0, round(retry_after))
            response.headers["Retry-After"] = str(seconds)
            if status == 429:  # SendGrid's own rate-limit headers; Reset is an epoch second.
                response.headers["X-RateLimit-Limit"] = "600"
                response.headers["X-RateLimit-Remaining"] = "0"
                response.headers["X-RateLimit-Reset"] = str(int(time.time()) + seconds)
        return response


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"Bearer …{key[-4:]}" if len(key) > 8 else "Bearer …"}
    for name in ("content-type", "user-agent", "on-behalf-of"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded
