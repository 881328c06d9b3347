"""The Retrier: drains the spool.

It leases due messages (a lease keeps two workers, or two nodes, off the same
message; a crashed worker's leases run out and are taken over) and hands each
one to the Deliverer, which decides whether it is sent, failed, expired or
scheduled again with back-off.

Steady in flight. Up to `concurrency` redeliveries run at once, and a slot is
filled again as soon as its redelivery finishes: one slow vendor answer never
holds back the messages leased beside it (there is no batch to wait for).
Each look at the spool leases at most `min(free slots, batch_size)` messages.

Priority first. The spool hands out due messages most urgent first (the
traffic class priority stored with each). The last `reserved` free slots only
take messages above the lowest class priority, so a bulk backlog can hold
every other slot and a retried OTP still starts at once. The lowest priority
is asked for at every look (`lowest_priority`): a hot reload can change the
classes.

Pacing. `pace()` says how many seconds until some vendor can take one more
retried message (0: now; inf: never, or not known). Before leasing, and
before starting each leased message, the Retrier waits while it is above 0,
at most `poll_interval` at a time before asking again, so that a backlog is
not leased only to wait under its leases. A leased message is not held past
its lease minus `START_MARGIN`: it starts anyway, and the Deliverer, finding
the vendors full, schedules it again. The contract with `pace`: after
starting a redelivery the Retrier lets it run up to its first suspension
before asking `pace()` again. The Deliverer takes its vendor's limiter token
synchronously before its first await, so the next answer already counts the
message just started, and one free token never starts a whole batch.

Waking. With nothing due the Retrier looks again after `poll_interval`, or at
once when `wake()` is called (a message was just spooled, or made due
earlier). When every slot is busy it waits for one to free, without polling.

Stopping. `run()` runs until cancelled (`App.stop`). It then cancels the
redeliveries in flight and waits for them to end, so no task outlives it.
That keeps the delivery promise: a cancelled redelivery's message is still
queued under this node's lease, which runs out (or is reclaimed at once when
this node starts again) and the message is retried; an attempt cut short
after its `begin_attempt` note is retried as in doubt, under its class's
ambiguous policy. Letting them finish instead could hold a stop for a whole
lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from mailmux.delivery import LEASE_MARGIN, Deliverer
from mailmux.spool.base import Leased, Store

log = logging.getLogger("mailmux.retry")

#: A leased message still held back by `pace()` starts anyway this long before its lease
#: ends: the Deliverer keeps LEASE_MARGIN to write the outcome and needs a moment to try.
START_MARGIN = 2 * LEASE_MARGIN


@dataclass(frozen=True, slots=True)
class RetrierSettings:
    poll_interval: float = 1.0  # seconds between looks while nothing is due
    lease_seconds: float = 60.0
    batch_size: int = 100  # messages leased per look, at most
    concurrency: int = 100  # redeliveries in flight, at most
    reserved: int = 10  # of the free slots, the last ones: only above the lowest priority

    def __post_init__(self) -> None:
        if not 0 <= self.reserved < self.concurrency:
            raise ValueError(
                f"reserved must be ≥ 0 and < concurrency ({self.concurrency}), "
                f"or no slot is left for the lowest priority (got {self.reserved})"
            )


class _Next(Enum):
    """What a look at the spool leaves the Retrier to wait for before the next one."""

    AT_ONCE = auto()  # the lease came back full: more may be due, look again now
    SLOT = auto()  # only urgent mail could take the free slots: a freed slot lets the rest in
    POLL = auto()  # nothing more is due: the poll interval, or a wake()


class Retrier:
    """Runs until cancelled; see the module docstring for how it fills its slots."""

    def __init__(
        self,
        deliverer: Deliverer,
        store: Store,
        settings: RetrierSettings,
        *,
        owner: str,
        lowest_priority: Callable[[], int],
        pace: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._deliverer = deliverer
        self._store = store
        self._settings = settings
        self._owner = owner
        self._lowest_priority = lowest_priority
        self._pace = pace
        self._wall = wall_clock
        self._in_flight: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()  # a redelivery finished since the last look
        self._woken = asyncio.Event()  # wake() was called since the last look
        # A wake() for a message due soon, and when it fires (uvloop's handles do not say).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def wake(self, due: float | None = None) -> None:
        """A message was just spooled, or made due earlier: look at the spool when it is due
        (epoch seconds; now when None). One timer, for the earliest due time asked for; a
        message due a poll interval or more from now is left to the next poll."""
        delay = 0.0 if due is None else due - self._wall()
        if delay <= 0:
            self._woken.set()
            return
        if delay >= self._settings.poll_interval:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + delay
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(at, self._timed_wake), at

    def _timed_wake(self) -> None:
        self._timer = None
        self._woken.set()

    async def run(self) -> None:
        """Forever: fill free slots with due messages, then wait for what lets more in."""
        released = await self._store.release_leases(self._owner)
        if released:
            log.info("reclaimed %d leases this node held before it restarted", released)
        try:
            while True:
                try:
                    after = await self._look()
                except Exception:
                    log.exception("retry pass failed; trying again after the poll interval")
                    # Not cut short by wake(): a failing store is not asked once per new message.
                    await asyncio.sleep(self._settings.poll_interval)
                    continue
                await self._wait(after)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await self._stop_in_flight()

    async def _look(self) -> _Next:
        """Once a slot is free and pace allows: lease what the free slots may take, start it."""
        await self._slot_free()
        await self._paced(until=None)
        self._woken.clear()
        self._freed.clear()
        free = self._settings.concurrency - len(self._in_flight)
        reserved, batch = self._settings.reserved, self._settings.batch_size
        if free > reserved:
            limit, floor = min(free - reserved, batch), None
        else:
            limit, floor = min(free, batch), self._lowest_priority() + 1
        leased = await self._store.lease_due(
            now=self._wall(),
            owner=self._owner,
            lease_seconds=self._settings.lease_seconds,
            limit=limit,
            min_priority=floor,
        )
        await self._start(leased)
        if len(leased) == limit:
            return _Next.AT_ONCE
        return _Next.POLL if floor is None else _Next.SLOT

    async def _slot_free(self) -> None:
        while len(self._in_flight) >= self._settings.concurrency:
            self._freed.clear()
            await self._freed.wait()

    async def _paced(self, *, until: float | None) -> None:
        """Wait while no vendor can take another retried message, but not past `until`."""
        if self._pace is None:
            return
        while (wait := self._pace()) > 0:
            wait = min(wait, self._settings.poll_interval)  # inf: ask again after a poll
            if until is not None:
                left = until - self._wall()
                if left <= 0:
                    return
                wait = min(wait, left)
            await asyncio.sleep(wait)

    async def _start(self, leased: list[Leased]) -> None:
        """Start each leased message in the order the spool gave them, paced."""
        for item in leased:
            await self._paced(until=item.lease_until - START_MARGIN)
            task = asyncio.create_task(self._redeliver(item), name=f"retry-{item.record.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
            # To its first suspension: it takes its limiter token, which the next pace() sees.
            await asyncio.sleep(0)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._freed.set()

    async def _redeliver(self, leased: Leased) -> None:
        try:
            await self._deliverer.redeliver(leased, self._owner)
        except Exception:
            # The lease runs out and the message is retried later; nothing is lost.
            log.exception("retry of %s failed; it stays in the spool", leased.record.id)

    async def _wait(self, after: _Next) -> None:
        """Until the next look: at once, a freed slot or a wake(), or a wake() alone."""
        if after is _Next.AT_ONCE:
            return
        events = [self._woken, self._freed] if after is _Next.SLOT else [self._woken]
        waits = [asyncio.create_task(event.wait()) for event in events]
        try:
            await asyncio.wait(
                waits, timeout=self._settings.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _stop_in_flight(self) -> None:
        """Cancel the redeliveries in flight and wait until every one has ended."""
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
