"""Amazon SES v2 SendEmail as the emulator serves it, on the inbound shape's parsing.

`POST /v2/email/outbound-emails`, rest-json. Like moto, the emulator checks
that a request is SigV4-signed for `ses` (an `AWS4-HMAC-SHA256` Authorization
whose scope ends in `/ses/aws4_request`, and an `X-Amz-Date`) without
verifying the signature, so any key pair works. The body is checked by
`SesInbound.parse`, the same rules the ingress applies, with SES's own limits
(50 recipients, 40 MB); a refusal is answered as SES answers it. The request
body is stored as received.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response
from mailmux.message import MessageLimits
from mailmux.vendors.inbound import ShapeError, ShapeRequest
from mailmux.vendors.ses import replies, sigv4
from mailmux.vendors.ses.inbound import ENDPOINT, SesInbound
from mailmux.vendors.ses.sendemail import MAX_RECIPIENTS

_SES_BYTES = 40 * 1024 * 1024
#: What SES itself takes: 50 recipients, 40 MB a message, SES's 995-character headers.
_LIMITS = MessageLimits(
    max_message_bytes=_SES_BYTES, max_attachment_bytes=_SES_BYTES, max_recipients=MAX_RECIPIENTS
)


class SesShape:
    """The SES v2 shape; stateless, so one instance serves every request."""

    routes: Sequence[Route] = ((ENDPOINT.method, ENDPOINT.path),)

    def __init__(self) -> None:
        self._inbound = SesInbound()

    async def receive(self, request: web.Request) -> Received | web.Response:
        problem = sigv4.authorization_problem(request.headers)
        if problem is not None:
            return reply_response(replies.error(403, *problem))
        raw = await request.read()
        incoming = ShapeRequest.of(ENDPOINT.name, request, raw)
        try:
            self._inbound.parse(incoming, now=self._inbound.clock(), limits=_LIMITS)
        except ShapeError as err:
            return reply_response(
                self._inbound.failure(ENDPOINT.name, err.failure, err.message, err.errors)
            )
        return Received(body=raw, headers=_recorded_headers(request.headers))

    def accepted(self, message_id: str) -> web.Response:
        return reply_response(replies.sent(message_id))

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        return reply_response(replies.fault_reply(status, retry_after))


def _recorded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """What a test wants to see of the request headers: the credential scope, not the
    signature; the access key by its tail only."""
    authorization = headers.get("Authorization", "")
    credential = authorization.partition("Credential=")[2].partition(",")[0]
    key, _, scope = credential.partition("/")
    shown = f"…{key[-4:]}" if len(key) > 8 else "…"
    recorded = {"authorization": f"AWS4-HMAC-SHA256 Credential={shown}/{scope}"}
    for name in ("content-type", "x-amz-date", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    if "x-amz-security-token" in headers:
        recorded["x-amz-security-token"] = "…"
    return recorded
