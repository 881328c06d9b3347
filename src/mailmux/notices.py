"""Notices: what an operator should hear about, as it happens, from one place.

A notice is an operational event, not a message's: a vendor ejected, a
half-open probe let through, a vendor recovered (failback), an override
set, restored or expired, a config reloaded or refused. Health, Control and
the reload each publish to the node's `NoticeBoard`; the dashboard's event
stream and the outgoing webhooks subscribe to it. Notices are plain data
(`to_json`), so that later they can travel between nodes like overrides do.

Publishing never waits: a subscriber that does not keep up loses its oldest
notices (and is told how many), the publisher is never slowed. The board
keeps the latest `RECENT` notices for a dashboard that opens late.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Notices kept for late subscribers (the dashboard's "recent events").
RECENT = 200
#: Notices one subscriber may have waiting before its oldest are dropped.
BACKLOG = 1000


class NoticeKind(StrEnum):
    EJECTED = "ejected"  # Health took a vendor out of routing
    PROBE = "probe"  # a half-open probe was let through to an ejected vendor
    RECOVERED = "recovered"  # the vendor is healthy again: traffic fails back
    OVERRIDE = "override"  # an operator set or removed an override, or one expired
    RELOAD = "reload"  # a new config file was swapped in
    RELOAD_FAILED = "reload_failed"  # a config file was refused; the old config stays


@dataclass(frozen=True, slots=True)
class Notice:
    at: float  # epoch seconds
    kind: NoticeKind
    summary: str  # one line for a person
    vendor: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)  # JSON-able, never a secret

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind.value,
            "vendor": self.vendor,
            "summary": self.summary,
            "detail": dict(self.detail),
        }


class Subscription:
    """One subscriber's notices, oldest first; `dropped` counts what it lost by lagging."""

    def __init__(self) -> None:
        self._queue: deque[Notice] = deque(maxlen=BACKLOG)
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, notice: Notice) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(notice)
        self._ready.set()

    async def get(self) -> Notice:
        """The next notice, waiting for one if none is waiting."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def take(self) -> list[Notice]:
        """Every notice waiting now, without waiting."""
        notices = list(self._queue)
        self._queue.clear()
        return notices


class NoticeBoard:
    """One node's notices: published by Health, Control and reloads, read by subscribers."""

    def __init__(self) -> None:
        self._recent: deque[Notice] = deque(maxlen=RECENT)
        self._subscribers: set[Subscription] = set()

    def publish(self, notice: Notice) -> None:
        self._recent.append(notice)
        for subscription in self._subscribers:
            subscription.put(notice)

    def recent(self) -> list[Notice]:
        """The latest notices, oldest first."""
        return list(self._recent)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Notices published from now until the block ends."""
        subscription = Subscription()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
