"""What both emulators keep and how they are controlled: stored messages, faults, and
the `/_emulator/*` routes. `ControlledEmulator` is the public face the HTTP and the SMTP
emulator share; each adds how it listens.

The store is bounded — `MAX_MESSAGES` by default — so a long benchmark cannot
exhaust memory: the oldest messages drop out, `accepted_total` keeps counting.

Faults are replaced as a whole. Each change wakes whoever waits on the old set
(a delayed or hung request decides again; `faults_changed()` returns), and a
set with `for_ms` clears itself when that runs out. Only the emulator knows
how to stop and start listening, so `FaultControl` calls back into it for
`down`, before anything else changes: if the port cannot be bound again, the
faults stay as they were.

Control routes, on whatever app an emulator adds them to (faults never apply
to them): `GET /_emulator/messages` lists the store (header
`X-Emulator-Accepted-Total`), `DELETE` empties it; `GET /_emulator/faults`
shows the faults, `POST` replaces them (`{}` clears; 400 for a bad set, 409 if
the port cannot be bound again).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from mailmux.emulator.base import Received
from mailmux.emulator.faults import FaultError, Faults

#: Default cap on stored messages (≈ 80 MB of 8 KB requests).
MAX_MESSAGES = 10_000
_JSON = "application/json"
#: What a request waiting on faults gets once the emulator stops.
_STOPPED = Faults(reset=True)

ApplyDown = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One accepted request; `id` is the vendor message id the client was given."""

    id: str
    received_at: float  # epoch seconds
    headers: Mapping[str, str]
    raw_body: bytes  # the request body as a JSON document

    @property
    def body(self) -> Any:
        """The request body, decoded (JSON: dicts, lists, strings, numbers)."""
        return orjson.loads(self.raw_body)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "received_at": datetime.fromtimestamp(self.received_at, UTC).isoformat(
                timespec="milliseconds"
            ),
            "headers": dict(self.headers),
            "body": orjson.Fragment(self.raw_body),
        }


class MessageStore:
    """The accepted messages, oldest first, and a count of every one ever accepted."""

    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be ≥ 1, got {max_messages}")
        self._messages: deque[StoredMessage] = deque(maxlen=max_messages)
        self._accepted_total = 0

    @property
    def messages(self) -> list[StoredMessage]:
        return list(self._messages)

    @property
    def accepted_total(self) -> int:
        return self._accepted_total

    def add(self, message_id: str, received: Received, arrived_at: float | None = None) -> None:
        """Store one accepted message (the oldest drops out when full).

        `arrived_at` is when its request came in (default: now). It is what a
        vendor's rate limit counts, so an injected latency, or this loop's
        timers firing late under load, must not move it.
        """
        at = time.time() if arrived_at is None else arrived_at
        self._messages.append(StoredMessage(message_id, at, received.headers, received.body))
        self._accepted_total += 1

    def clear(self) -> None:
        self._messages.clear()


class FaultControl:
    """One emulator's faults: the current set, its expiry, and who waits for a change."""

    def __init__(self, apply_down: ApplyDown, rng: random.Random | None = None) -> None:
        """`apply_down(down)` closes or reopens the emulator's listening socket (OSError
        if it cannot); `rng` draws which requests the faults hit."""
        self._apply_down = apply_down
        self._rng = rng or random.Random()
        self._faults = Faults()
        self._changed = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._listening = False
        self._stopping = False

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        """The emulator listens now: `down` applies from here on, a `down` set before too."""
        self._listening = True
        if self._faults.down:
            self._apply_down(True)

    def stop(self) -> None:
        """No more changes; delayed and hung requests wake up (and are reset)."""
        self._stopping = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._changed.set()

    def replace(self, faults: Faults, apply_down: ApplyDown | None = None) -> None:
        """Replace the faults; call from the emulator's loop. `apply_down`, if given, stands
        in for the emulator's own for this change. OSError if the port is taken."""
        if self._listening and not self._stopping:
            (apply_down or self._apply_down)(faults.down)
        self._faults = faults
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if faults.for_ms is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                faults.for_ms / 1000, self._expire, faults
            )

    async def changed(self) -> Faults:
        """Wait for the next change of faults (a POST, a call, or `for_ms` running out)."""
        await self._changed.wait()
        return self._faults

    async def strike(self) -> Faults | None:
        """Put one request through the per-request faults' delay and hang; then the faults
        that end it (`reset`, or an error `status`), or None to answer it normally. Once
        the emulator stops, a waiting request is reset."""
        while True:
            faults, changed = self._faults, self._changed
            if self._stopping:
                return _STOPPED
            if not faults.per_request or (faults.rate < 1.0 and self._rng.random() >= faults.rate):
                return None
            if faults.latency_ms > 0 and await _woken(changed, faults.latency_ms / 1000):
                continue  # faults changed during the delay: decide again
            if faults.hang:
                await changed.wait()
                continue
            if faults.reset or faults.status is not None:
                return faults
            return None

    def _expire(self, faults: Faults) -> None:
        if self._faults is faults and not self._stopping:
            self.replace(Faults())


class ControlledEmulator(abc.ABC):
    """The face both emulators share — what they stored, their faults — and what their
    control routes read and steer. A subclass listens, and says how `down` applies."""

    def __init__(
        self, port: int, control_port: int | None, rng: random.Random | None, max_messages: int
    ) -> None:
        self.port = port
        self.control_port = control_port
        self._store = MessageStore(max_messages)
        self._fault_control = FaultControl(self._apply_down, rng)

    @property
    def messages(self) -> list[StoredMessage]:
        """The accepted messages still stored, oldest first."""
        return self._store.messages

    @property
    def accepted_total(self) -> int:
        """Every message accepted since start, including those dropped from the store."""
        return self._store.accepted_total

    def clear_messages(self) -> None:
        """Empty the store (`accepted_total` keeps counting)."""
        self._store.clear()

    @property
    def faults(self) -> Faults:
        return self._fault_control.faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; call from the emulator's loop. OSError if the port is taken."""
        self._fault_control.replace(faults)

    def set_down(self, down: bool) -> None:
        """Refuse connections on the main port and drop the open ones, or listen again on
        the same port."""
        self.set_faults(dataclasses.replace(self.faults, down=down))

    async def faults_changed(self) -> Faults:
        """Wait for the next change of faults (a POST, a call, or `for_ms` running out)."""
        return await self._fault_control.changed()

    @abc.abstractmethod
    def _apply_down(self, down: bool) -> None:
        """Close the main listening socket and drop its connections, or listen again on
        the same port (OSError if it cannot)."""


def add_control_routes(
    app: web.Application,
    emulator: ControlledEmulator,
    *,
    set_faults: Callable[[Faults, web.Request], None] | None = None,
    listing_headers: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """Serve the control routes for `emulator` on `app`.

    `set_faults(faults, request)` replaces `emulator.set_faults` for a POST that needs
    its request (the HTTP emulator answers it before dropping connections);
    `listing_headers()` adds headers to the message listing.
    """

    async def list_messages(request: web.Request) -> web.Response:
        body = orjson.dumps([message.to_json() for message in emulator.messages])
        headers = {"X-Emulator-Accepted-Total": str(emulator.accepted_total)}
        if listing_headers is not None:
            headers.update(listing_headers())
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def clear_messages(request: web.Request) -> web.Response:
        emulator.clear_messages()
        return web.Response(status=204)

    async def get_faults(request: web.Request) -> web.Response:
        return _json(200, emulator.faults.to_json())

    async def post_faults(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            faults = Faults.from_json(orjson.loads(raw) if raw.strip() else {})
        except orjson.JSONDecodeError:
            return _json(400, {"error": "the body is not valid JSON"})
        except FaultError as err:
            return _json(400, {"error": str(err)})
        if faults.down and faults.for_ms is None and emulator.control_port is None:
            error = "down: nothing could bring the port back; add for_ms or use a control port"
            return _json(400, {"error": error})
        try:
            if set_faults is None:
                emulator.set_faults(faults)
            else:
                set_faults(faults, request)
        except OSError as err:
            return _json(409, {"error": f"cannot listen on port {emulator.port} again: {err}"})
        return _json(200, faults.to_json())

    app.router.add_get("/_emulator/messages", list_messages)
    app.router.add_delete("/_emulator/messages", clear_messages)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_post("/_emulator/faults", post_faults)


async def _woken(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to `timeout` seconds; True if `event` fired first."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def _json(status: int, data: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)
