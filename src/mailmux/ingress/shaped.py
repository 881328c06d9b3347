"""The vendor-shaped ingress: each ESP's own send API, answered in that ESP's words.

One handler serves every shape (`mailmux.vendors.inbound.Shape`); the shape
says where the key is, how the request becomes Messages and how results are
worded. The handler keeps the promise the native API keeps: a success only
once a vendor accepted each message or the spool holds it; nothing sent
and nothing spooled when the request is refused.

When the one message of a request was decided by a vendor of the same ESP,
which was handed the caller's request unchanged, the caller gets that ESP's
own answer (status, body, headers) rather than one mailmux words for it:
it is the answer the SDK would have had without mailmux. Every answer
carries mailmux's message ids in `X-Mailmux-Message-Id`, so a caller can
look a message up with `GET /v1/messages/{id}`.

Two request headers work on every shape, because an SDK lets a caller add
headers where it cannot add fields: `X-Mailmux-Class` (traffic class) and
`X-Mailmux-Deadline` (RFC 3339 instant or seconds), and the native
`Idempotency-Key` (unless the shape knows it for one its SDK made up:
`ChoosesIdempotencyKey`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from aiohttp import web
from multidict import CIMultiDict

from mailmux.idempotency import IdempotencyKeyReused
from mailmux.ingress.api import ApiContext
from mailmux.ingress.body import BodyTooLarge, read_body
from mailmux.ingress.counted import counted
from mailmux.message import CLASS_HEADER, DEADLINE_HEADER, Checker, Message, recipient_count
from mailmux.native import valid_idempotency_key
from mailmux.receipts import Receipt
from mailmux.spool.base import IdempotencyConflict, MessageState
from mailmux.vendors.base import HttpResponse
from mailmux.vendors.inbound import (
    ChoosesIdempotencyKey,
    Failure,
    ItemResult,
    Reply,
    Shape,
    ShapeError,
    ShapeRequest,
)

log = logging.getLogger("mailmux.ingress")

#: Response headers of an ESP's answer that belong to that connection, not to the answer.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
    | {"date", "server", "set-cookie", "alt-svc", "strict-transport-security", "via"}
)
IDS_HEADER = "X-Mailmux-Message-Id"


class ShapedIngress:
    """One shape's routes; the context is the native API's (Deliverer, keys, limits, ...)."""

    def __init__(self, shape: Shape, ctx: ApiContext, max_request_bytes: int) -> None:
        self.shape = shape
        self.ctx = ctx
        self._max_request_bytes = max_request_bytes
        #: The Idempotency-Key the caller meant (a shape may know its SDK's own from it).
        self._key: Callable[[ShapeRequest], str | None] = (
            shape.idempotency_key
            if isinstance(shape, ChoosesIdempotencyKey)
            else lambda incoming: incoming.headers.get("Idempotency-Key")
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route(endpoint.method, endpoint.path, self._handler(endpoint.name))
            for endpoint in self.shape.endpoints
        ]

    def _handler(self, endpoint: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.handle(endpoint, request)

        return counted(handle, self.ctx.metrics, self.shape.kind)

    async def handle(self, endpoint: str, request: web.Request) -> web.StreamResponse:
        shape = self.shape
        try:
            # bytes, not the buffer: a single message's pass-through body is this object.
            body = bytes(await read_body(request, self._max_request_bytes))
        except BodyTooLarge:
            limit = self._max_request_bytes
            return _response(
                shape.failure(endpoint, Failure.TOO_LARGE, f"request body exceeds {limit} bytes")
            )
        incoming = ShapeRequest.of(endpoint, request, body)
        credential = shape.credential(incoming)
        caller = self.ctx.keys.identify(credential)
        if caller is None:
            if credential is None:
                refusal = (Failure.UNAUTHORIZED, "no API key given")
            else:
                refusal = (Failure.FORBIDDEN, "the API key is not one mailmux knows")
            return _response(shape.failure(endpoint, *refusal))
        key = self._key(incoming)
        try:
            messages = self._messages(incoming, key)
        except ShapeError as err:
            return _response(shape.failure(endpoint, err.failure, err.message, err.errors))
        if caller.client is not None:
            messages = [replace(m, client=caller.client) for m in messages]
        # The ESP's own answer fits the caller only when its request went out as it came:
        # a batch of one narrowed to the single-send endpoint was answered for that one.
        verbatim = len(messages) == 1 and _same_endpoint(messages[0], endpoint)
        request_hash = None if key is None else hashlib.sha256(body).hexdigest()
        del body, incoming  # parsed: a large body is not held while the messages are delivered
        try:
            answers = await self._submit(messages, key, request_hash)
        except IdempotencyKeyReused:
            return _response(
                shape.failure(
                    endpoint,
                    Failure.IDEMPOTENCY_REUSED,
                    "this Idempotency-Key was first used with a different request body",
                )
            )
        except IdempotencyConflict:
            return _response(
                shape.failure(
                    endpoint,
                    Failure.IDEMPOTENCY_IN_FLIGHT,
                    "another request with this Idempotency-Key is being processed",
                )
            )
        except Exception:
            log.exception("could not deliver or spool a message")
            return _response(
                shape.failure(
                    endpoint,
                    Failure.UNAVAILABLE,
                    "not accepted: no vendor took the message and it could not be spooled",
                )
            )
        receipts = [receipt for receipt, _ in answers]
        ids = ", ".join(r.id for r in receipts)
        headers = {IDS_HEADER: ids}
        if all(replayed for _, replayed in answers):
            headers["Idempotent-Replayed"] = "true"
        passed = receipts[0].passed_through if verbatim else None
        if passed is not None:
            return _passed_through(passed, headers)
        reply_request = ShapeRequest.of(endpoint, request, b"")  # the body is gone already
        reply = shape.reply(
            reply_request, [_item(r, m) for r, m in zip(receipts, messages, strict=True)]
        )
        return _response(reply, headers)

    def _messages(self, incoming: ShapeRequest, key: str | None) -> list[Message]:
        """The shape's messages with the class, deadline and key the request headers set."""
        if key is not None and not valid_idempotency_key(key):
            raise ShapeError(
                Failure.INVALID_REQUEST, "Idempotency-Key must be 1 to 256 printable characters"
            )
        now = self.ctx.clock()
        messages = self.shape.parse(incoming, now=now, limits=self.ctx.limits)
        wanted_class = incoming.headers.get(CLASS_HEADER)
        wanted_deadline = incoming.headers.get(DEADLINE_HEADER)
        if wanted_class is None and wanted_deadline is None and key is None:
            return messages
        check = Checker(self.ctx.limits)
        traffic_class = check.traffic_class(wanted_class, CLASS_HEADER)
        deadline = check.deadline(_seconds_or_instant(wanted_deadline), DEADLINE_HEADER, now)
        if check.errors:
            raise ShapeError(Failure.INVALID_REQUEST, str(check.errors[0]), check.errors)
        return [
            replace(
                message,
                idempotency_key=_item_key(key, index),
                traffic_class=message.traffic_class if wanted_class is None else traffic_class,
                deadline=message.deadline if wanted_deadline is None else deadline,
            )
            for index, message in enumerate(messages)
        ]

    async def _submit(
        self, messages: Sequence[Message], key: str | None, request_hash: str | None
    ) -> list[tuple[Receipt, bool]]:
        """Each message to the Deliverer (under its share of the idempotency key)."""
        deliverer = self.ctx.deliverer
        if key is None or request_hash is None:
            if len(messages) == 1:
                return [(await deliverer.submit(messages[0]), False)]
            receipts = await asyncio.gather(*(deliverer.submit(m) for m in messages))
            return [(receipt, False) for receipt in receipts]

        async def guarded(message: Message) -> tuple[Receipt, bool]:
            item_key = message.idempotency_key or key

            async def deliver() -> Receipt:
                return await deliverer.submit(message, request_hash=request_hash)

            return await self.ctx.guard.run(item_key, request_hash, deliver)

        return list(await asyncio.gather(*(guarded(m) for m in messages)))


def _same_endpoint(message: Message, endpoint: str) -> bool:
    return message.original is not None and message.original.endpoint == endpoint


def _item_key(key: str | None, index: int) -> str | None:
    """One request's key, shared out over its messages: `key#0`, `key#1`, ...

    Even a lone message gets `key#0`, so a later request with the same key
    meets the first message's record whatever its count of messages, and
    is refused as a reuse when its body differs.
    """
    return None if key is None else f"{key}#{index}"


def _seconds_or_instant(value: str | None) -> str | float | None:
    """A deadline header: seconds from now when it is a number, else an RFC 3339 instant."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _item(receipt: Receipt, message: Message) -> ItemResult:
    state = receipt.state
    accepted = state in (MessageState.SENT, MessageState.QUEUED)
    return ItemResult(
        id=receipt.id,
        accepted=accepted,
        queued=state is MessageState.QUEUED,
        expired=state is MessageState.EXPIRED,
        reason=receipt.reason or "",
        recipients=recipient_count(message),
    )


def _response(reply: Reply, extra: dict[str, str] | None = None) -> web.Response:
    headers = CIMultiDict(reply.headers)
    if extra:
        headers.update(extra)
    return web.Response(status=reply.status, body=reply.body, headers=headers)


def _passed_through(answer: HttpResponse, extra: dict[str, str]) -> web.Response:
    """The ESP's own answer, as it came, with mailmux's headers added."""
    headers: CIMultiDict[str] = CIMultiDict(answer.headers)
    for name in _HOP_HEADERS.intersection(map(str.lower, headers)):
        del headers[name]
    headers.update(extra)
    return web.Response(status=answer.status, body=answer.body, headers=headers)
