"""Resend's send API as the emulator serves it, on the Resend shape's own parsing.

`POST /emails` and `POST /emails/batch` take any non-empty Bearer key (401
`missing_api_key` without one, 403 `invalid_api_key` for another scheme or a
blank key), want a `User-Agent` (Resend refuses requests without one) and
check the body with `ResendInbound.parse`, answering its refusals with the
shape's `failure`. A success is the shape's `reply`: `{"id"}`, or for a batch
`{"data": [{"id"}, ...]}` with the ids `<id>-0`, `<id>-1`, ... (the emulator
stores a batch as one request, under one id). The request body is stored as
received.

`Idempotency-Key` works as at Resend: 1 to 256 characters (else 400
`invalid_idempotency_key`); the same key with the same JSON (key order does
not matter) answers the first request's answer again and stores nothing; the
same key with other JSON is a 409 `invalid_idempotent_request`. Keys are kept
for the emulator's life, the newest `MAX_IDEMPOTENCY_KEYS` of them. The
answer a key maps to is learned in `accepted`, which the server calls right
after `receive` with no await between them.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response
from mailmux.message import DEFAULT_LIMITS
from mailmux.vendors.inbound import Failure, ItemResult, ShapeError, ShapeRequest
from mailmux.vendors.resend import replies
from mailmux.vendors.resend.inbound import ENDPOINTS, ResendInbound, bearer_key

MAX_IDEMPOTENCY_KEYS = 10_000
#: Resend's error name for an injected fault, per status.
_FAULT_NAMES: Mapping[int, str] = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "concurrent_idempotent_requests",
    422: "validation_error",
    429: "rate_limit_exceeded",
    451: "security_error",
    500: "application_error",
}
_PATHS = {endpoint.path: endpoint.name for endpoint in ENDPOINTS}


class ResendShape:
    """The Resend shape; it remembers idempotency keys, so one instance per emulator."""

    routes: Sequence[Route] = tuple((e.method, e.path) for e in ENDPOINTS)

    def __init__(self) -> None:
        self._inbound = ResendInbound()
        self._keys: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()  # key → (digest, body)
        self._max_keys = MAX_IDEMPOTENCY_KEYS
        #: Set by receive, used by accepted: (endpoint, emails, key and digest or None).
        self._pending: tuple[str, int, tuple[str, bytes] | None] = ("emails", 1, None)

    async def receive(self, request: web.Request) -> Received | web.Response:
        key = bearer_key(request.headers)
        if not key:
            failure = Failure.UNAUTHORIZED if key is None else Failure.FORBIDDEN
            return reply_response(replies.failure(failure, ""))
        if not request.headers.get("User-Agent"):
            return _error(403, "validation_error", "The User-Agent header is required.")
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
            return _error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        raw = await request.read()
        endpoint = _PATHS.get(request.path, "emails")
        incoming = ShapeRequest(
            endpoint, request.method, request.path, "", {}, request.headers, raw
        )
        try:
            count = len(self._inbound.parse(incoming, now=time.time(), limits=DEFAULT_LIMITS))
        except ShapeError as err:
            return reply_response(
                self._inbound.failure(endpoint, err.failure, err.message, err.errors)
            )
        pending_key = None
        if idempotency_key is not None:
            digest = hashlib.sha256(orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS))
            known = self._keys.get(idempotency_key)
            if known is not None:
                if known[0] != digest.digest():
                    return reply_response(replies.failure(Failure.IDEMPOTENCY_REUSED, ""))
                return web.Response(status=200, body=known[1], content_type="application/json")
            pending_key = (idempotency_key, digest.digest())
        self._pending = (endpoint, count, pending_key)
        return Received(body=raw, headers=_recorded_headers(request.headers, key))

    def accepted(self, message_id: str) -> web.Response:
        endpoint, count, pending_key = self._pending
        self._pending = ("emails", 1, None)
        ids = [f"{message_id}-{i}" for i in range(count)] if endpoint == "batch" else [message_id]
        reply = self._inbound.reply(_REPLY_TO[endpoint], [ItemResult(i, True) for i in ids])
        if pending_key is not None:
            key, digest = pending_key
            self._keys[key] = (digest, reply.body)
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        return reply_response(reply)

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        default = "application_error" if status >= 500 else "validation_error"
        response = _error(status, _FAULT_NAMES.get(status, default), "Emulated fault.")
        if retry_after is not None:
            seconds = str(max(0, round(retry_after)))
            response.headers["retry-after"] = seconds
            if status == 429:
                response.headers["ratelimit-limit"] = "2"
                response.headers["ratelimit-remaining"] = "0"
                response.headers["ratelimit-reset"] = seconds
        return response


#: What `reply` is shown of a request: its endpoint.
_REPLY_TO = {e.name: ShapeRequest(e.name, e.method, e.path, "", {}, {}, b"") for e in ENDPOINTS}


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"Bearer …{key[-4:]}" if len(key) > 8 else "Bearer …"}
    for name in ("content-type", "user-agent", "idempotency-key"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded


def _error(status: int, name: str, message: str) -> web.Response:
    return reply_response(replies.error(status, name, message))
