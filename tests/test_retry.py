"""The Retrier: keeps its slots full of due messages, most urgent first, paced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fakes import (
    T0,
    FakeClock,
    Rig,
    ScriptedVendor,
    accepted,
    kinds,
    make_message,
    make_rig,
    spool,
)

from mailmux.classes import BUILT_IN
from mailmux.delivery import Deliverer
from mailmux.message import Message
from mailmux.retry import START_MARGIN, Retrier, RetrierSettings
from mailmux.spool.base import EventKind, InDoubt, Leased, MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult, Vendor

T = TypeVar("T")
WAIT = 5.0  # upper bound on waiting for an event that should come at once
BULK = BUILT_IN["bulk"].priority  # the lowest built-in class priority
TRANSACTIONAL = BUILT_IN["transactional"].priority
OTP = BUILT_IN["otp"].priority
SENT = MessageState.SENT


@dataclass(frozen=True, slots=True)
class Look:
    """One `lease_due` call the Retrier made, and what it leased."""

    limit: int
    min_priority: int | None
    leased: tuple[str, ...]


class WatchedStore(SqliteStore):
    """A real store that records every look at the spool; `failures` looks raise first."""

    def __init__(self, path: str, *, clock: FakeClock) -> None:
        super().__init__(path, clock=clock)
        self.looks: list[Look] = []
        self.failures = 0
        self._seen: asyncio.Queue[Look] = asyncio.Queue()

    async def lease_due(
        self,
        *,
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int,
        min_priority: int | None = None,
    ) -> list[Leased]:
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        batch = await super().lease_due(
            now=now,
            owner=owner,
            lease_seconds=lease_seconds,
            limit=limit,
            min_priority=min_priority,
        )
        look = Look(limit, min_priority, tuple(item.record.id for item in batch))
        self.looks.append(look)
        self._seen.put_nowait(look)
        return batch

    async def next_look(self) -> Look:
        """The next look not yet returned here, waiting for it if need be."""
        return await asyncio.wait_for(self._seen.get(), WAIT)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, wall: FakeClock) -> AsyncIterator[WatchedStore]:
    store = WatchedStore(str(tmp_path / "spool.db"), clock=wall)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class NotifyingDeliverer(Deliverer):
    """Notes each redelivery as it starts and signals it finished; raises for `broken` ids.

    The note goes in `trace` just before the first await, where the real
    Deliverer takes its vendor's limiter token; a test's pace() adds its own.
    """

    broken: frozenset[str] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock: Callable[[], float] = kwargs["wall_clock"]
        self.done: asyncio.Queue[tuple[str, MessageState]] = asyncio.Queue()
        self.trace: list[str] = []
        self.started_at: dict[str, float] = {}

    async def redeliver(self, leased: Leased, owner: str) -> MessageState:
        message_id = leased.record.id
        self.trace.append(f"start {message_id}")
        self.started_at[message_id] = self.clock()
        if message_id in self.broken:
            raise RuntimeError(f"bug while retrying {message_id}")
        state = await super().redeliver(leased, owner)
        self.done.put_nowait((message_id, state))
        return state


def notifying(rig: Rig) -> NotifyingDeliverer:
    if not isinstance(rig.deliverer, NotifyingDeliverer):
        raise TypeError("the rig was not built with NotifyingDeliverer")
    return rig.deliverer


async def finished(rig: Rig, count: int) -> list[tuple[str, MessageState]]:
    """The next `count` redeliveries to finish, in the order they finished."""
    done = notifying(rig).done
    return [await asyncio.wait_for(done.get(), WAIT) for _ in range(count)]


class GatedVendor(Vendor):
    """Accepts every message, but holds the attempts `holds` picks until `gate` opens.

    Counts the attempts it holds at once (`held`, `peak`), sets `reached` once
    `wanted` are held, and counts the held attempts that were cancelled.
    """

    kind = "gated"

    def __init__(
        self, name: str, wanted: int, holds: Callable[[Message], bool] = lambda _: True
    ) -> None:
        super().__init__(name)
        self.holds = holds
        self.gate = asyncio.Event()
        self.held = 0
        self.peak = 0
        self.wanted = wanted
        self.reached = asyncio.Event()
        self.cancelled = 0

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        if self.holds(message):
            self.held += 1
            self.peak = max(self.peak, self.held)
            if self.held >= self.wanted:
                self.reached.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.held -= 1
        return accepted()


class Pace:
    """A fake pace(): `closed` seconds (every vendor full) until `opened` is set, then 0.

    Each call appends "pace" to `trace` (a deliverer's, to see the order of both).
    """

    def __init__(self, closed: float, trace: list[str] | None = None) -> None:
        self.closed = closed
        self.opened = asyncio.Event()
        self.trace = [] if trace is None else trace
        self.calls = 0
        self._waiting: list[tuple[int, asyncio.Event]] = []

    def __call__(self) -> float:
        self.calls += 1
        self.trace.append("pace")
        for times, event in self._waiting:
            if self.calls >= times:
                event.set()
        return 0.0 if self.opened.is_set() else self.closed

    async def asked(self, times: int) -> None:
        """Return once pace() has been called `times` times."""
        event = asyncio.Event()
        self._waiting.append((times, event))
        if self.calls >= times:
            event.set()
        await asyncio.wait_for(event.wait(), WAIT)


def retrier(
    rig: Rig,
    owner: str = "node-a",
    *,
    lowest: Callable[[], int] = lambda: BULK,
    pace: Callable[[], float] | None = None,
    **settings: Any,
) -> Retrier:
    settings.setdefault("poll_interval", 3600.0)  # no look comes from the poll by itself
    settings.setdefault("reserved", 0)  # the tests of reserved slots say how many
    return Retrier(
        rig.deliverer,
        rig.store,
        RetrierSettings(**settings),
        owner=owner,
        lowest_priority=lowest,
        pace=pace,
        wall_clock=rig.wall,
    )


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run `coro` as a task for the block, then cancel it and wait (boundedly) for it to stop."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        await stop(task)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task`; fail instead of hanging if it ignores the cancellation."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT)
    if not done:
        task.cancel()  # it is waiting for its next poll now: this one lands
        await asyncio.wait({task})
        raise AssertionError("the task kept running after it was cancelled")
    if not task.cancelled() and task.exception() is not None:
        raise AssertionError("the task failed") from task.exception()


async def state_of(store: SqliteStore, message_id: str) -> tuple[MessageState, list[EventKind]]:
    found = await store.get(message_id)
    if found is None:
        raise AssertionError(f"{message_id} is not in the store")
    return found[0].state, kinds(found[1])


def make_notifying_rig(store: WatchedStore, wall: FakeClock, vendor: Vendor) -> Rig:
    return make_rig(store, [vendor], wall=wall, deliverer_type=NotifyingDeliverer)


async def test_run_delivers_what_is_due_then_waits_for_the_poll(
    store: WatchedStore, wall: FakeClock
) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_notifying_rig(store, wall, vendor)
    for i in range(3):
        await spool(store, f"m{i}", make_message(subject=f"n{i}"), due=T0 - i)

    async with running(retrier(rig).run()):
        done = await finished(rig, 3)

    assert sorted(done) == [("m0", SENT), ("m1", SENT), ("m2", SENT)]
    assert sorted(call.message.subject for call in vendor.calls) == ["n0", "n1", "n2"]
    for i in range(3):
        assert await state_of(store, f"m{i}") == (
            SENT,
            [EventKind.RECEIVED, EventKind.ATTEMPT, EventKind.SENT],
        )
    # Earliest due first; fewer than asked for: nothing more was due, so no second look.
    assert store.looks == [Look(100, None, ("m2", "m1", "m0"))]


async def test_a_message_not_yet_due_is_not_touched(store: WatchedStore, wall: FakeClock) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_notifying_rig(store, wall, vendor)
    await spool(store, "due", make_message(subject="due"), due=T0)
    later = await spool(store, "later", make_message(subject="later"), due=T0 + 100.0)

    async with running(retrier(rig).run()):
        assert await finished(rig, 1) == [("due", SENT)]

    assert [call.message.subject for call in vendor.calls] == ["due"]
    found = await store.get("later")
    assert found is not None and found[0] == later and kinds(found[1]) == [EventKind.RECEIVED]
    # Not leased either: another worker can take it the moment it is due.
    [taken] = await store.lease_due(now=T0 + 100.0, owner="other", lease_seconds=60, limit=10)
    assert taken.record.id == "later"


async def test_a_full_lease_is_followed_by_another_look_at_once(
    store: WatchedStore, wall: FakeClock
) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    await asyncio.gather(*(spool(store, f"m{i:03}", make_message(), due=T0) for i in range(250)))

    async with running(retrier(rig, batch_size=40, concurrency=100).run()):
        done = await finished(rig, 250)

    assert {state for _, state in done} == {SENT}
    assert sum(len(look.leased) for look in store.looks) == 250
    assert all(look.limit <= 40 for look in store.looks)  # never more than batch_size
    # Every look but the last came back full and was followed by another at once.
    *full, last = store.looks
    assert all(len(look.leased) == look.limit for look in full)
    assert len(last.leased) < last.limit


async def test_a_slow_retry_does_not_hold_back_the_next_ones(
    store: WatchedStore, wall: FakeClock
) -> None:
    vendor = GatedVendor("a", wanted=1, holds=lambda message: message.subject == "slow")
    rig = make_notifying_rig(store, wall, vendor)
    await spool(store, "slow", make_message(subject="slow"), due=T0 - 1)
    for i in range(5):
        await spool(store, f"m{i}", make_message(subject=f"n{i}"), due=T0)

    async with running(retrier(rig, concurrency=3).run()):
        done = await finished(rig, 5)
        assert vendor.held == 1  # still held: the others went past it
        vendor.gate.set()
        assert await finished(rig, 1) == [("slow", SENT)]

    assert sorted(done) == [(f"m{i}", SENT) for i in range(5)]
    # The first look filled all three slots; later ones leased into the two that kept freeing.
    assert store.looks[0] == Look(3, None, ("slow", "m0", "m1"))
    assert all(look.limit <= 2 for look in store.looks[1:])


async def test_the_reserved_slots_take_only_mail_above_the_lowest_priority(
    store: WatchedStore, wall: FakeClock
) -> None:
    vendor = GatedVendor("a", wanted=3, holds=lambda message: message.traffic_class == "bulk")
    rig = make_notifying_rig(store, wall, vendor)
    for i in range(4):
        bulk = make_message(subject=f"bulk{i}", traffic_class="bulk")
        await spool(store, f"bulk{i}", bulk, due=T0 - 4 + i, priority=BULK)
    r = retrier(rig, concurrency=4, reserved=1)

    async with running(r.run()):
        await asyncio.wait_for(vendor.reached.wait(), WAIT)
        assert [await store.next_look(), await store.next_look()] == [
            Look(3, None, ("bulk0", "bulk1", "bulk2")),
            Look(1, BULK + 1, ()),  # the last free slot: bulk3 is due but may not take it
        ]
        await spool(store, "otp", make_message(traffic_class="otp"), due=T0, priority=OTP)
        r.wake()
        assert await finished(rig, 1) == [("otp", SENT)]
        assert await store.next_look() == Look(1, BULK + 1, ("otp",))
        assert vendor.held == 3

    # bulk3 was never leased: another node could take it at once.
    [left] = await store.lease_due(now=T0, owner="other", lease_seconds=60, limit=10)
    assert left.record.id == "bulk3"


async def test_the_lowest_priority_is_asked_at_every_look(
    store: WatchedStore, wall: FakeClock
) -> None:
    vendor = GatedVendor("a", wanted=1, holds=lambda message: message.traffic_class == "bulk")
    rig = make_notifying_rig(store, wall, vendor)
    await spool(store, "bulk", make_message(traffic_class="bulk"), due=T0, priority=BULK)
    lowest = [BULK]
    r = retrier(rig, concurrency=2, reserved=1, lowest=lambda: lowest[0])

    async with running(r.run()):
        await asyncio.wait_for(vendor.reached.wait(), WAIT)
        assert await store.next_look() == Look(1, None, ("bulk",))
        assert await store.next_look() == Look(1, BULK + 1, ())
        lowest[0] = TRANSACTIONAL  # a reload left transactional the lowest class
        await spool(store, "tx", make_message(), due=T0, priority=TRANSACTIONAL)
        r.wake()
        assert await store.next_look() == Look(1, TRANSACTIONAL + 1, ())
        lowest[0] = BULK
        r.wake()
        assert await finished(rig, 1) == [("tx", SENT)]
        assert await store.next_look() == Look(1, BULK + 1, ("tx",))


async def test_the_most_urgent_due_message_goes_first(store: WatchedStore, wall: FakeClock) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_notifying_rig(store, wall, vendor)
    for i in range(5):
        bulk = make_message(subject=f"bulk{i}", traffic_class="bulk")
        await spool(store, f"bulk{i}", bulk, due=T0 - 10 + i, priority=BULK)
    otp = make_message(subject="otp", traffic_class="otp")
    await spool(store, "otp", otp, due=T0, priority=OTP)  # due last of all

    async with running(retrier(rig, concurrency=2, reserved=1).run()):
        await finished(rig, 6)

    assert [call.message.subject for call in vendor.calls] == [
        "otp",
        *(f"bulk{i}" for i in range(5)),
    ]


@pytest.mark.parametrize(
    ("closed", "poll_interval"),
    [(0.001, 3600.0), (math.inf, 0.001)],  # inf: asked again after a poll interval
    ids=["seconds", "unknown"],
)
async def test_pace_holds_the_retrier_until_a_vendor_can_take_more(
    store: WatchedStore, wall: FakeClock, closed: float, poll_interval: float
) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_notifying_rig(store, wall, vendor)
    await spool(store, "m", make_message(), due=T0)
    pace = Pace(closed)

    async with running(retrier(rig, pace=pace, poll_interval=poll_interval).run()):
        await pace.asked(3)  # asked, waited, asked again, waited, asked again
        assert store.looks == [] and vendor.calls == []  # nothing leased meanwhile
        pace.opened.set()
        assert await finished(rig, 1) == [("m", SENT)]

    assert store.looks[0].leased == ("m",)


async def test_pace_is_asked_again_only_after_the_started_retry_reached_its_first_await(
    store: WatchedStore, wall: FakeClock
) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    deliverer = notifying(rig)
    for i in range(3):
        await spool(store, f"m{i}", make_message(), due=T0 - 3 + i)
    pace = Pace(0.0, trace=deliverer.trace)

    async with running(retrier(rig, pace=pace).run()):
        await finished(rig, 3)

    assert deliverer.trace[:7] == [
        "pace",  # before leasing
        "pace",  # before starting m0
        "start m0",  # it took its token before the next question
        "pace",
        "start m1",
        "pace",
        "start m2",
    ]


async def test_a_held_message_starts_anyway_before_its_lease_runs_out(
    store: WatchedStore, wall: FakeClock
) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    deliverer = notifying(rig)
    await spool(store, "m", make_message(), due=T0)

    def pace() -> float:
        """Free for the look; then full, a second passing per answer, until the retry starts."""
        if not store.looks or deliverer.started_at:
            return 0.0
        wall.advance(1.0)
        return 0.001

    async with running(retrier(rig, pace=pace, lease_seconds=60.0).run()):
        assert await finished(rig, 1) == [("m", SENT)]

    assert deliverer.started_at == {"m": T0 + 60.0 - START_MARGIN}


async def test_wake_looks_at_the_spool_at_once(store: WatchedStore, wall: FakeClock) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    r = retrier(rig, poll_interval=3600.0)

    async with running(r.run()):
        assert await store.next_look() == Look(100, None, ())  # then it waits for the poll
        await spool(store, "m", make_message(), due=T0)
        r.wake()
        assert await finished(rig, 1) == [("m", SENT)]

    assert store.looks == [Look(100, None, ()), Look(100, None, ("m",))]


async def test_wake_for_a_message_due_soon_looks_when_it_is_due(
    store: WatchedStore, wall: FakeClock
) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    r = retrier(rig, poll_interval=3600.0)

    async with running(r.run()):
        assert await store.next_look() == Look(100, None, ())
        await spool(store, "m", make_message(), due=T0)
        r.wake(T0 + 0.2)  # later, and a second, earlier one: one timer, for the earliest
        r.wake(T0 + 0.05)
        assert await finished(rig, 1) == [("m", SENT)]

    assert store.looks == [Look(100, None, ()), Look(100, None, ("m",))]


async def test_run_reclaims_this_nodes_leases_at_start(
    store: WatchedStore, wall: FakeClock
) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    await spool(store, "m1", make_message(), due=T0)
    # Node x leased it and crashed: its lease would keep everyone off for an hour.
    [held] = await store.lease_due(now=T0, owner="node-x", lease_seconds=3600, limit=10)
    assert held.record.id == "m1"
    assert await store.lease_due(now=T0, owner="node-y", lease_seconds=60, limit=10) == []

    async with running(retrier(rig, owner="node-x").run()):
        done = await finished(rig, 1)

    assert done == [("m1", SENT)]
    assert wall() == T0  # redelivered at once: no clock moved, no lease ran out
    assert (await state_of(store, "m1"))[0] is SENT


async def test_a_failing_redelivery_does_not_stop_the_others(
    store: WatchedStore, wall: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_notifying_rig(store, wall, vendor)
    notifying(rig).broken = frozenset({"m1"})
    for i in range(3):
        await spool(store, f"m{i}", make_message(), due=T0)
    caplog.set_level(logging.CRITICAL + 1, logger="mailmux.retry")  # the traceback is expected

    async with running(retrier(rig, lease_seconds=60.0).run()):
        assert sorted(await finished(rig, 2)) == [("m0", SENT), ("m2", SENT)]

    assert len(vendor.calls) == 2
    assert await state_of(store, "m1") == (MessageState.QUEUED, [EventKind.RECEIVED])
    # Nothing is lost: once its lease runs out the broken one is due again.
    assert await store.lease_due(now=T0 + 59.0, owner="b", lease_seconds=60, limit=10) == []
    [again] = await store.lease_due(now=T0 + 61.0, owner="b", lease_seconds=60, limit=10)
    assert again.record.id == "m1"


async def test_a_failed_look_is_logged_and_tried_again(
    store: WatchedStore, wall: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_notifying_rig(store, wall, ScriptedVendor("a", then=accepted()))
    await spool(store, "m", make_message(), due=T0)
    store.failures = 1

    with caplog.at_level(logging.ERROR, logger="mailmux.retry"):
        async with running(retrier(rig, poll_interval=0.01).run()):
            assert await finished(rig, 1) == [("m", SENT)]

    assert [r.getMessage() for r in caplog.records if r.name == "mailmux.retry"] == [
        "retry pass failed; trying again after the poll interval"
    ]


async def test_concurrency_bounds_redeliveries_in_flight(
    store: WatchedStore, wall: FakeClock
) -> None:
    vendor = GatedVendor("a", wanted=2)
    rig = make_notifying_rig(store, wall, vendor)
    for i in range(5):
        await spool(store, f"m{i}", make_message(), due=T0)

    async with running(retrier(rig, concurrency=2).run()):
        await asyncio.wait_for(vendor.reached.wait(), WAIT)
        assert [look.leased for look in store.looks] == [("m0", "m1")]  # none while both busy
        vendor.gate.set()
        await finished(rig, 5)

    assert vendor.peak == 2
    counts = await store.count_by_state()
    assert counts[SENT] == 5


async def test_stopping_cancels_the_retries_in_flight_and_loses_nothing(
    store: WatchedStore, wall: FakeClock
) -> None:
    vendor = GatedVendor("a", wanted=2)
    rig = make_notifying_rig(store, wall, vendor)
    for i in range(2):
        await spool(store, f"m{i}", make_message(), due=T0)

    async with running(retrier(rig).run()):
        await asyncio.wait_for(vendor.reached.wait(), WAIT)

    assert (vendor.cancelled, vendor.held) == (2, 0)
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running
    for i in range(2):
        assert (await state_of(store, f"m{i}"))[0] is MessageState.QUEUED
    # Once the lease runs out they are retried, each attempt cut short as in doubt.
    again = await store.lease_due(now=T0 + 61.0, owner="b", lease_seconds=60, limit=10)
    assert [(item.record.id, item.in_doubt) for item in again] == [
        ("m0", InDoubt("a", T0)),
        ("m1", InDoubt("a", T0)),
    ]


@pytest.mark.parametrize("reserved", [-1, 4, 5])
def test_reserved_slots_must_leave_one_for_the_lowest_priority(reserved: int) -> None:
    with pytest.raises(ValueError, match="reserved must be"):
        RetrierSettings(concurrency=4, reserved=reserved)
