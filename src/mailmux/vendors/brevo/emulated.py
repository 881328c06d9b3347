"""Brevo's transactional email API as the emulator serves it, through the `inbound` shape.

`POST /v3/smtp/email` with any non-empty `api-key` is checked by the same
`BrevoInbound.parse` mailmux's ingress uses, and answered by the same
replies: 201 `{"messageId": "<id@emulator.brevo.invalid>"}`, or
`{"messageIds": [...]}` (one `<id.n@…>` per version) for `messageVersions`;
202 instead of 201 when `scheduledAt` is set, as Brevo answers a scheduled
send. The request body is stored as received.

Injected faults carry Brevo's error body with its code for the status; a
429 carries Brevo's `x-sib-ratelimit-limit/-remaining/-reset` headers
(reset: seconds until the window resets) and, like Brevo, no Retry-After.

`receive` hands the answer's shape (versions, scheduled) to `accepted`
through a context variable: both run in the same request task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar

from aiohttp import web

from mailmux.emulator.base import Received, Route, status_phrase
from mailmux.message import DEFAULT_LIMITS
from mailmux.vendors.brevo.inbound import ENDPOINT, BrevoInbound, decode, messages
from mailmux.vendors.brevo.replies import error_reply, success_reply
from mailmux.vendors.inbound import Failure, ItemResult, Reply, ShapeError, json_reply

_ID_DOMAIN = "emulator.brevo.invalid"
_RATE_LIMIT = "1000"  # Brevo's documented limit for /v3/smtp/email (per second)
#: Error codes Brevo uses for statuses the emulator injects.
_FAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "not_enough_credits",
    403: "permission_denied",
    404: "document_not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "duplicate_request",
    422: "unprocessable_entity",
}
#: (versions, scheduled) of the request being answered: `versions` is None for a plain send.
_PLAN: ContextVar[tuple[int | None, bool]] = ContextVar("brevo_plan", default=(None, False))


class BrevoShape:
    """The Brevo shape of the emulator; stateless apart from the per-request plan."""

    routes: Sequence[Route] = tuple((e.method, e.path) for e in BrevoInbound.endpoints)

    def __init__(self) -> None:
        self._inbound = BrevoInbound(_ID_DOMAIN)

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = request.headers.get("api-key", "").strip()
        if not key:
            return self._refusal(Failure.UNAUTHORIZED, "no API key given")
        raw = await request.read()
        try:
            document = decode(raw)
            found = messages(document, raw, _JSON, DEFAULT_LIMITS)
        except ShapeError as err:
            return self._refusal(err.failure, err.message, err)
        versions = len(found) if document.get("messageVersions") is not None else None
        _PLAN.set((versions, document.get("scheduledAt") is not None))
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        versions, scheduled = _PLAN.get()
        _PLAN.set((None, False))
        if versions is None:
            results = [ItemResult(message_id, accepted=True)]
        else:
            results = [ItemResult(f"{message_id}.{n}", accepted=True) for n in range(versions)]
        reply = success_reply(results, versions=versions is not None, id_domain=_ID_DOMAIN)
        return _response(reply, status=202 if scheduled else reply.status)

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        text = f"{status_phrase(status)} (emulated fault)"
        code = _FAULT_CODES.get(status)
        reply = error_reply(status, code, text) if code else json_reply(status, {"message": text})
        response = _response(reply)
        if status == 429:
            response.headers["x-sib-ratelimit-limit"] = _RATE_LIMIT
            response.headers["x-sib-ratelimit-remaining"] = "0"
            reset = 1.0 if retry_after is None else retry_after
            response.headers["x-sib-ratelimit-reset"] = str(max(0, round(reset)))
        elif retry_after is not None:  # an injected 503 from a proxy in front of Brevo, say
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response

    def _refusal(
        self, failure: Failure, message: str, error: ShapeError | None = None
    ) -> web.Response:
        errors = () if error is None else error.errors
        return _response(self._inbound.failure(ENDPOINT, failure, message, errors))


_JSON = "application/json"


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"api-key": f"…{key[-4:]}" if len(key) > 8 else "…"}
    for name in ("content-type", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _response(reply: Reply, status: int | None = None) -> web.Response:
    return web.Response(
        status=reply.status if status is None else status,
        body=reply.body,
        headers=dict(reply.headers),
    )
