"""The emulator's Mailjet (`POST /v3.1/send`), reading and answering as `inbound` does.

Any non-empty key is accepted (Basic `key:secret` or Bearer), as the
emulator has no accounts. The body is read by `request.read_send`, the
parser mailmux's ingress uses, and answered in `replies`' words; what
differs is what Mailjet does and mailmux does not: a batch is not atomic.
Each message is checked on its own; the valid ones are stored and answered
with ids, the others answered with their errors (status 400 then, as
Mailjet answers a batch with a failed message). A call-level problem (bad
JSON, unusable `Messages`) is a global error.

The emulator stores one record per request: the body as received when every
message is valid (no re-encoding on the hot path), else the body with only
the valid messages. `SandboxMode: true` validates and answers without
storing, as Mailjet validates without delivering (ids "" and 0). Ids: the
first recipient of the first stored message gets the emulator's id as its
`MessageUUID` (so the id a client records is the id `/_emulator/messages`
lists); other recipients get `<id>-<n>`; `MessageID`s are distinct numbers
as long as Mailjet's real ones.

`receive` hands the reply to `accepted` through a context variable: both run
in the same request task, so concurrent requests never see each other's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import orjson
from aiohttp import web

from mailmux.emulator.base import Received, Route, reply_response, status_phrase
from mailmux.message import DEFAULT_LIMITS
from mailmux.vendors.inbound import Failure, ShapeError
from mailmux.vendors.mailjet import replies
from mailmux.vendors.mailjet.inbound import ENDPOINT, credential
from mailmux.vendors.mailjet.replies import Ids
from mailmux.vendors.mailjet.request import Item, read_send

_FIRST_MESSAGE_ID = 288_230_376_151_711_744  # 2**58: as long as Mailjet's real ids


@dataclass(frozen=True, slots=True)
class _Pending:
    """What `accepted` answers for one request: every item, and where ids point."""

    base_url: str
    items: tuple[Item, ...]


_PENDING: ContextVar[_Pending | None] = ContextVar("mailjet_pending", default=None)


class MailjetEmulated:
    """The Mailjet v3.1 emulator shape; one instance serves every request of one emulator."""

    routes: Sequence[Route] = ((ENDPOINT.method, ENDPOINT.path),)

    def __init__(self) -> None:
        self._message_ids = itertools.count(_FIRST_MESSAGE_ID)

    async def receive(self, request: web.Request) -> Received | web.Response:
        authorization = request.headers.get("Authorization", "")
        found = credential(authorization)
        if found is None:
            return reply_response(
                replies.failure(Failure.UNAUTHORIZED, "send Basic API key:secret")
            )
        raw = await request.read()
        try:
            sent = read_send(
                raw,
                request.headers.get("Content-Type", "application/json"),
                now=time.time(),
                limits=DEFAULT_LIMITS,
                keep_original=False,
            )
        except ShapeError as err:
            return reply_response(replies.failure(err.failure, err.message, err.errors))
        pending = _Pending(str(request.url.origin()), sent.items)
        valid = [item.entry for item in sent.items if not item.errors]
        if sent.sandbox or not valid:
            return self._answer(pending, message_id="")
        if len(valid) < len(sent.items):
            raw = orjson.dumps({**sent.document, "Messages": valid})
        _PENDING.set(pending)
        shown = found.name or authorization.partition(" ")[2].strip()  # Bearer: no name
        return Received(body=raw, headers=_recorded_headers(request.headers, shown))

    def accepted(self, message_id: str) -> web.Response:
        pending = _PENDING.get()
        _PENDING.set(None)
        return self._answer(pending or _Pending("", ()), message_id)

    def fault(self, status: int, retry_after: float | None) -> web.Response:
        reply = replies.global_error(
            status, f"emulated-{status}", f"{status_phrase(status)} (emulated fault)"
        )
        response = reply_response(reply)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(0, round(retry_after)))
        return response

    def _answer(self, pending: _Pending, message_id: str) -> web.Response:
        """Mailjet's per-message answer; `message_id` "" means nothing was stored (no ids)."""
        ids = self._ids(message_id, pending.base_url)
        entries = [
            replies.refused(item.errors) if item.errors else replies.success(item.echo, ids)
            for item in pending.items
        ]
        return reply_response(replies.answer(entries))

    def _ids(self, message_id: str, base_url: str) -> Iterator[Ids]:
        """The emulator id for the first recipient, then `<id>-1`, `<id>-2`, … ("", 0 unsent)."""
        if not message_id:
            yield from itertools.repeat(("", 0, f"{base_url}/v3/REST/message/0"))
        for place in itertools.count():
            number = next(self._message_ids)
            uuid = f"{message_id}-{place}" if place else message_id
            yield uuid, number, f"{base_url}/v3/REST/message/{number}"


def _recorded_headers(headers: Mapping[str, str], key: str) -> dict[str, str]:
    """What a test wants to see of the request headers; the key is shown by its tail only."""
    recorded = {"authorization": f"…{key[-4:]}" if len(key) > 8 else "…"}
    for name in ("content-type", "user-agent", "idempotency-key"):
        value = headers.get(name)
        if value is not None:
            recorded[name] = value
    return recorded
