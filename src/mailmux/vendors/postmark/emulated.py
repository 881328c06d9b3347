"""Postmark as the emulator serves it: the inbound shape's checks and answers, no second parser.

Every endpoint of `PostmarkInbound` is served. A request needs a non-empty
`X-Postmark-Server-Token` (any token: the emulator has no accounts); it is
then checked by `PostmarkInbound.parse_items`, so the emulator refuses
exactly what mailmux's Postmark ingress refuses, in the same words, and
answers as Postmark does: 200 `{"To", "SubmittedAt", "MessageID",
"ErrorCode": 0, "Message": "OK"}` (`To` echoed as the request wrote it, left
out when it had none), an array of those for a batch, whose items get the
emulator's id with `-<index>` appended. A batch is stored as one request, its
body as received. Injected faults answer `{"ErrorCode", "Message"}` with
Postmark's code for the status.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence

from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response
from mailmux.message import DEFAULT_LIMITS
from mailmux.vendors.inbound import (
    Failure,
    ItemResult,
    ShapeError,
    ShapeRequest,
    json_reply,
)
from mailmux.vendors.postmark import replies
from mailmux.vendors.postmark.inbound import ENDPOINTS, SINGLE_OF, TOKEN_HEADER, PostmarkInbound

#: Postmark's ErrorCode for an injected status: 401 is a token error (10), 503 is
#: maintenance (100), 422 an invalid request (300); others carry the status itself.
_FAULT_CODES = {401: replies.TOKEN_ERROR, 422: replies.INVALID_EMAIL, 503: replies.MAINTENANCE}
_ENDPOINT_BY_PATH = {endpoint.path: endpoint.name for endpoint in ENDPOINTS}
_INBOUND = PostmarkInbound()
#: The request being answered: its endpoint and each message's To ("" for none).
#: `accepted` only gets the id; a context variable, as each request runs in its own task.
_answering: contextvars.ContextVar[tuple[str, list[str]]] = contextvars.ContextVar(
    "postmark_answering"
)


class PostmarkShape:
    """The emulator's Postmark; stateless apart from the per-request context variable."""

    routes: Sequence[Route] = tuple((e.method, e.path) for e in ENDPOINTS)

    async def receive(self, request: web.Request) -> Received | web.Response:
        endpoint = _ENDPOINT_BY_PATH.get(request.path, "email")
        token = request.headers.get(TOKEN_HEADER, "").strip()
        if not token:
            return reply_response(
                _INBOUND.failure(endpoint, Failure.UNAUTHORIZED, "no server token")
            )
        raw = await request.read()
        incoming = ShapeRequest.of(endpoint, request, raw)
        try:
            items = _INBOUND.parse_items(incoming, limits=DEFAULT_LIMITS)
        except ShapeError as err:
            return reply_response(_INBOUND.failure(endpoint, err.failure, err.message, err.errors))
        to = [item.get("To") or "" for item, _ in items]
        _answering.set((endpoint, [t if isinstance(t, str) else "" for t in to]))
        return Received(body=raw, headers=_recorded_headers(request.headers, token))

    def accepted(self, message_id: str) -> web.Response:
        endpoint, to = _answering.get(("email", [""]))
        if endpoint in SINGLE_OF:
            results = [ItemResult(f"{message_id}-{i}", accepted=True) for i in range(len(to))]
            return reply_response(replies.batch_reply(results, [t or None for t in to]))
        return reply_response(replies.single_reply(ItemResult(message_id, True), to[0] or None))

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        code = _FAULT_CODES.get(status, status)
        document = replies.error_document(code, f"Emulated fault: HTTP {status}.")
        headers = None if retry_after is None else {"Retry-After": str(max(0, round(retry_after)))}
        return reply_response(json_reply(status, document, headers))


def _recorded_headers(headers: Mapping[str, str], token: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the token is shown by its tail only."""
    shown = f"…{token[-4:]}" if len(token) > 8 else "…"
    recorded = {"x-postmark-server-token": shown}
    for name in ("content-type", "accept", "user-agent"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded
