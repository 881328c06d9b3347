"""The native HTTP API: `/v1/messages`, `/v1/health`, the OpenAPI spec.

The hot route (`POST /v1/messages`) is a plain aiohttp handler with no
middleware: decode once with orjson, validate into a Message, hand it to the
Deliverer, answer with the receipt. The status code says what happened:
200 sent, 202 queued (durably spooled), 422 failed, 504 expired.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mailmux.delivery import Deliverer
from mailmux.idempotency import IdempotencyGuard, IdempotencyKeyReused
from mailmux.ingress.body import BodyTooLarge, read_body
from mailmux.ingress.clients import Caller, ClientKeys
from mailmux.ingress.counted import counted
from mailmux.ingress.errors import error_response, json_response
from mailmux.ingress.openapi import openapi_document
from mailmux.message import InvalidMessage, MessageLimits
from mailmux.metrics import NATIVE_SHAPE, NO_METRICS, Metrics, Recorder
from mailmux.native import parse_native
from mailmux.receipts import Receipt
from mailmux.spool.base import Event, EventKind, IdempotencyConflict, MessageState, Store
from mailmux.vendors.inbound import Credential, Shape
from mailmux.vendors.sandbox import SandboxVendor

log = logging.getLogger("mailmux.api")

_STATUS_BY_STATE = {
    MessageState.SENT: 200,
    MessageState.QUEUED: 202,
    MessageState.FAILED: 422,
    MessageState.EXPIRED: 504,
}
_ERROR_BY_STATE = {
    MessageState.FAILED: ("rejected", "a vendor rejected the message permanently"),
    MessageState.EXPIRED: ("deadline_expired", "the deadline passed before any vendor took it"),
}
MAX_IDEMPOTENCY_KEY = 256


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the API needs; built by the app."""

    deliverer: Deliverer
    guard: IdempotencyGuard
    store: Store
    limits: MessageLimits
    keys: ClientKeys
    status: Callable[[], Awaitable[dict[str, Any]]]
    sandboxes: Mapping[str, SandboxVendor]
    clock: Callable[[], float]
    metrics: Recorder = NO_METRICS


def _receipt_response(receipt: Receipt, replayed: bool) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    status = _STATUS_BY_STATE[receipt.state]
    error = _ERROR_BY_STATE.get(receipt.state)
    if error is None:
        return json_response(receipt.to_json(), status, headers)
    code, message = error
    return error_response(
        status, code, receipt.reason or message, extra=receipt.to_json(), headers=headers
    )


def _unauthorized() -> web.Response:
    return error_response(
        401,
        "unauthorized",
        "missing or unknown API key: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _event_json(event: Event) -> dict[str, Any]:
    return {"at": event.at, "kind": event.kind.value, "vendor": event.vendor, **event.detail}


class Api:
    def __init__(
        self, ctx: ApiContext, max_request_bytes: int, shapes: Sequence[Shape] = ()
    ) -> None:
        self.ctx = ctx
        self._max_request_bytes = max_request_bytes
        # The document states this server's limits; it never changes while the app runs.
        self._openapi = orjson.dumps(openapi_document(ctx.limits, max_request_bytes, shapes))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", counted(self.post_message, self.ctx.metrics, NATIVE_SHAPE)),
            web.get("/v1/messages/{id}", self.get_message),
            web.get("/v1/health", self.get_health),
            web.get("/v1/sandbox/{vendor}/messages", self.get_sandbox),
            web.get("/v1/openapi.json", self.get_openapi),
            *([web.get("/metrics", self.get_metrics)] if self.ctx.metrics.enabled else []),
        ]

    def _caller(self, request: web.Request) -> Caller | None:
        """Who sent the request (by its Bearer key), or None when no key matched."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = Credential(token.strip()) if scheme.lower() == "bearer" else None
        return self.ctx.keys.identify(given)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """None when the request may pass; keys are compared in constant time."""
        return None if self._caller(request) is not None else _unauthorized()

    async def post_message(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if caller is None:
            return _unauthorized()
        try:
            body = await read_body(request, self._max_request_bytes)
        except BodyTooLarge:
            return error_response(
                413,
                "request_too_large",
                f"request body exceeds {self._max_request_bytes} bytes",
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            return error_response(400, "invalid_json", f"request body is not JSON: {err}")
        key = request.headers.get("Idempotency-Key")
        request_hash = "" if key is None else hashlib.sha256(body).hexdigest()
        del body  # parsed: a large body is not held while the message is delivered
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            return error_response(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            )
        try:
            message = parse_native(
                payload, now=self.ctx.clock(), limits=self.ctx.limits, idempotency_key=key
            )
        except InvalidMessage as err:
            details = [{"path": e.path, "code": e.code, "message": e.message} for e in err.errors]
            return error_response(
                400,
                "invalid_message",
                "; ".join(f"{e.path}: {e.message}" for e in err.errors),
                details=details,
            )
        del payload  # the Message holds what is needed; the decoded JSON can go
        if caller.client is not None:
            message = replace(message, client=caller.client)
        try:
            if key is None:
                receipt, replayed = await self.ctx.deliverer.submit(message), False
            else:
                receipt, replayed = await self.ctx.guard.run(
                    key,
                    request_hash,
                    lambda: self.ctx.deliverer.submit(message, request_hash=request_hash),
                )
        except IdempotencyKeyReused:
            return error_response(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was first used with a different request body;"
                " use a new key for a new message",
            )
        except IdempotencyConflict:
            return error_response(
                409,
                "idempotency_conflict",
                "another request with this Idempotency-Key is being processed elsewhere",
            )
        except Exception:
            # No vendor took it and the spool could not store it: say so, never "accepted".
            log.exception("could not deliver or spool a message")
            return error_response(
                503,
                "unavailable",
                "the message was not accepted: no vendor took it and it could not be spooled",
            )
        return _receipt_response(receipt, replayed)

    async def get_message(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        message_id = request.match_info["id"]
        found = await self.ctx.store.get(message_id)
        if found is None:
            return error_response(404, "not_found", f"no message with id {message_id!r}")
        record, events = found
        body: dict[str, Any] = dict(Receipt.from_record(record).to_json())
        body.update(
            {
                "class": record.traffic_class,
                "created_at": record.created_at,
                "updated_at": record.updated_at,
                "deadline": record.deadline,
                "next_attempt_at": record.next_attempt_at,
                "attempts": [_event_json(e) for e in events if e.kind is EventKind.ATTEMPT],
                "events": [_event_json(e) for e in events],
            }
        )
        return json_response(body)

    async def get_health(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        return json_response(await self.ctx.status())

    async def get_sandbox(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        name = request.match_info["vendor"]
        sandbox = self.ctx.sandboxes.get(name)
        if sandbox is None:
            return error_response(404, "not_found", f"no sandbox vendor named {name!r}")
        return json_response([entry.to_json() for entry in sandbox.entries])

    async def get_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition; asks for a client key like `/v1/health` does."""
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        metrics = self.ctx.metrics
        assert isinstance(metrics, Metrics)  # the route exists only when metrics are on
        body = await metrics.scrape(self.ctx.store)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")
