"""The Retrier: leases due messages in batches and hands them to the Deliverer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Sequence
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
    opened_store,
    spool,
)

from mailmux.delivery import Deliverer
from mailmux.message import Message
from mailmux.retry import Retrier, RetrierSettings
from mailmux.spool.base import Event, EventKind, Leased, MessageRecord, MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult, Vendor

T = TypeVar("T")
WAIT = 5.0  # upper bound on waiting for an event that should come at once


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, wall: FakeClock) -> AsyncIterator[SqliteStore]:
    async with opened_store(tmp_path / "spool.db", clock=wall) as store:
        yield store


class CountingStore(SqliteStore):
    """Records what every `lease_due` returned and signals after `expected` updates."""

    def __init__(self, path: str, *, clock: FakeClock, expected: int) -> None:
        super().__init__(path, clock=clock)
        self.leased: list[int] = []
        self.leased_once = asyncio.Event()
        self.updates = 0
        self.expected = expected
        self.all_updated = asyncio.Event()

    async def lease_due(
        self,
        *,
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int,
        min_priority: int | None = None,
    ) -> list[Leased]:
        batch = await super().lease_due(
            now=now,
            owner=owner,
            lease_seconds=lease_seconds,
            limit=limit,
            min_priority=min_priority,
        )
        self.leased.append(len(batch))
        self.leased_once.set()
        return batch

    async def update(self, record: MessageRecord, events: Sequence[Event], *, owner: str) -> None:
        await super().update(record, events, owner=owner)
        self.updates += 1
        if self.updates >= self.expected:
            self.all_updated.set()


class NotifyingDeliverer(Deliverer):
    """Signals each finished redelivery; raises for the ids in `broken`."""

    broken: frozenset[str] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.done: asyncio.Queue[tuple[str, MessageState]] = asyncio.Queue()

    async def redeliver(self, leased: Leased, owner: str) -> MessageState:
        if leased.record.id in self.broken:
            raise RuntimeError(f"bug while retrying {leased.record.id}")
        state = await super().redeliver(leased, owner)
        self.done.put_nowait((leased.record.id, state))
        return state


def notifying(rig: Rig) -> NotifyingDeliverer:
    if not isinstance(rig.deliverer, NotifyingDeliverer):
        raise TypeError("the rig was not built with NotifyingDeliverer")
    return rig.deliverer


def retrier(
    rig: Rig, owner: str = "node-a", *, store: SqliteStore | None = None, **settings: Any
) -> Retrier:
    settings.setdefault("poll_interval", 3600.0)  # only an explicit pass runs
    return Retrier(
        rig.deliverer,
        store or rig.store,
        RetrierSettings(**settings),
        owner=owner,
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


async def test_run_once_delivers_what_is_due(store: SqliteStore, wall: FakeClock) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_rig(store, [vendor], wall=wall)
    for i in range(3):
        await spool(store, f"m{i}", make_message(subject=f"n{i}"), due=T0 - i)

    assert await retrier(rig).run_once() == 3

    assert sorted(call.message.subject for call in vendor.calls) == ["n0", "n1", "n2"]
    for i in range(3):
        assert await state_of(store, f"m{i}") == (
            MessageState.SENT,
            [EventKind.RECEIVED, EventKind.ATTEMPT, EventKind.SENT],
        )
    assert await retrier(rig).run_once() == 0  # nothing left


async def test_a_message_not_yet_due_is_not_touched(store: SqliteStore, wall: FakeClock) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_rig(store, [vendor], wall=wall)
    await spool(store, "due", make_message(subject="due"), due=T0)
    later = await spool(store, "later", make_message(subject="later"), due=T0 + 100.0)

    assert await retrier(rig).run_once() == 1

    assert [call.message.subject for call in vendor.calls] == ["due"]
    found = await store.get("later")
    assert found is not None and found[0] == later and kinds(found[1]) == [EventKind.RECEIVED]
    # Not leased either: another worker can take it the moment it is due.
    [taken] = await store.lease_due(now=T0 + 100.0, owner="other", lease_seconds=60, limit=10)
    assert taken.record.id == "later"


async def test_a_full_batch_is_followed_by_another_pass_at_once(
    tmp_path: Path, wall: FakeClock
) -> None:
    store = CountingStore(str(tmp_path / "spool.db"), clock=wall, expected=250)
    await store.open()
    try:
        rig = make_rig(store, [ScriptedVendor("a", then=accepted())], wall=wall)
        await asyncio.gather(
            *(spool(store, f"m{i:03}", make_message(), due=T0) for i in range(250))
        )

        async with running(retrier(rig, batch_size=100).run()):
            await asyncio.wait_for(store.all_updated.wait(), WAIT)

        assert store.leased == [100, 100, 50]  # then it waits for the poll interval
        counts = await store.count_by_state()
        assert (counts[MessageState.SENT], counts[MessageState.QUEUED]) == (250, 0)
    finally:
        await store.close()


async def test_run_reclaims_this_nodes_leases_at_start(store: SqliteStore, wall: FakeClock) -> None:
    rig = make_rig(
        store, [ScriptedVendor("a", then=accepted())], wall=wall, deliverer_type=NotifyingDeliverer
    )
    await spool(store, "m1", make_message(), due=T0)
    # Node x leased it and crashed: its lease would keep everyone off for an hour.
    [held] = await store.lease_due(now=T0, owner="node-x", lease_seconds=3600, limit=10)
    assert held.record.id == "m1"
    assert await retrier(rig, owner="node-y").run_once() == 0

    async with running(retrier(rig, owner="node-x").run()):
        done = await asyncio.wait_for(notifying(rig).done.get(), WAIT)

    assert done == ("m1", MessageState.SENT)
    assert wall() == T0  # redelivered at once: no clock moved, no lease ran out
    assert (await state_of(store, "m1"))[0] is MessageState.SENT


async def test_a_failing_redelivery_does_not_stop_the_others(
    store: SqliteStore, wall: FakeClock
) -> None:
    vendor = ScriptedVendor("a", then=accepted())
    rig = make_rig(store, [vendor], wall=wall, deliverer_type=NotifyingDeliverer)
    notifying(rig).broken = frozenset({"m1"})
    for i in range(3):
        await spool(store, f"m{i}", make_message(), due=T0)

    assert await retrier(rig, lease_seconds=60.0).run_once() == 3

    assert len(vendor.calls) == 2
    for message_id in ("m0", "m2"):
        assert (await state_of(store, message_id))[0] is MessageState.SENT
    assert await state_of(store, "m1") == (MessageState.QUEUED, [EventKind.RECEIVED])
    # Nothing is lost: once its lease runs out the broken one is due again.
    assert await store.lease_due(now=T0 + 59.0, owner="b", lease_seconds=60, limit=10) == []
    [again] = await store.lease_due(now=T0 + 61.0, owner="b", lease_seconds=60, limit=10)
    assert again.record.id == "m1"


class GatedVendor(Vendor):
    """Holds every attempt until `gate` opens; tracks how many are in flight at once."""

    kind = "gated"

    def __init__(self, name: str, wanted: int) -> None:
        super().__init__(name)
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.peak = 0
        self.wanted = wanted
        self.reached = asyncio.Event()

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.wanted:
            self.reached.set()
        await self.gate.wait()
        self.in_flight -= 1
        return accepted()


async def test_concurrency_bounds_redeliveries_in_flight(
    store: SqliteStore, wall: FakeClock
) -> None:
    vendor = GatedVendor("a", wanted=2)
    rig = make_rig(store, [vendor], wall=wall)
    for i in range(5):
        await spool(store, f"m{i}", make_message(), due=T0)

    async with running(retrier(rig, concurrency=2).run_once()) as task:
        await asyncio.wait_for(vendor.reached.wait(), WAIT)
        assert vendor.in_flight == 2
        vendor.gate.set()
        await asyncio.wait_for(asyncio.shield(task), WAIT)

    assert vendor.peak == 2
    counts = await store.count_by_state()
    assert counts[MessageState.SENT] == 5
