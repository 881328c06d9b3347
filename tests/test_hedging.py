"""Hedged first attempts: after the hedge delay the next vendor is asked alongside the first.

Vendors here answer when the test releases them (an asyncio.Event per
attempt), so which attempt finishes first is decided by the test, not by
timing; only the hedge delay itself is a (short, real) timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import (
    T0,
    FakeClock,
    Rig,
    accepted,
    make_message,
    make_rig,
    opened_store,
    retriable,
    spool,
)

from mailmux.classes import BUILT_IN, ClassBook
from mailmux.health import Admission
from mailmux.message import Message
from mailmux.spool.base import EventKind, Leased, MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult, Outcome, Vendor

HEDGE = 0.05  # seconds: the hedge delay of the `otp` class in these tests
WAIT = 5.0  # the bound on every wait
OTP = make_message(traffic_class="otp")


class GatedVendor(Vendor):
    """Each `send` waits until the test answers it with `answer(result)`."""

    kind = "gated"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.started = asyncio.Event()
        self.calls = 0
        self._answers: asyncio.Queue[AttemptResult] = asyncio.Queue()

    def answer(self, result: AttemptResult) -> None:
        self._answers.put_nowait(result)

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        self.calls += 1
        self.started.set()
        return await self._answers.get()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_store(tmp_path / "spool.db", clock=FakeClock(T0)) as store:
        yield store


def rig(store: SqliteStore, *vendors: Vendor, hedge: float | str = HEDGE) -> Rig:
    otp = replace(BUILT_IN["otp"], hedge_after=hedge)
    classes = ClassBook({**BUILT_IN, "otp": otp})
    return make_rig(store, vendors, wall=FakeClock(T0), classes=classes)


async def events_of(
    store: SqliteStore, message_id: str
) -> list[tuple[str | None, dict[str, object]]]:
    found = await store.get(message_id)
    assert found is not None
    return [(e.vendor, dict(e.detail)) for e in found[1] if e.kind is EventKind.ATTEMPT]


async def test_a_slow_first_vendor_is_hedged_and_the_second_acceptance_wins(
    store: SqliteStore,
) -> None:
    slow, fast = GatedVendor("slow"), GatedVendor("fast")
    r = rig(store, slow, fast)
    fast.answer(accepted("fast-1"))  # the hedge answers as soon as it is asked
    receipt = await asyncio.wait_for(r.deliverer.submit(OTP), WAIT)
    assert receipt.state is MessageState.SENT and receipt.vendor == "fast"
    assert slow.calls == 1 and fast.calls == 1
    slow.answer(accepted("slow-1"))  # the loser is taken too, after the answer
    await asyncio.wait_for(r.deliverer.settle(), WAIT)
    attempts = await events_of(store, receipt.id)
    assert [(vendor, d["outcome"], d["hedge"]) for vendor, d in attempts] == [
        ("fast", "accepted", "won"),
        ("slow", "accepted", "lost"),
    ]
    record, events = await store.get(receipt.id) or (None, [])
    assert record is not None and record.state is MessageState.SENT
    assert [e.kind for e in events].count(EventKind.SENT) == 1


async def test_a_first_vendor_that_answers_within_the_delay_is_not_hedged(
    store: SqliteStore,
) -> None:
    first, second = GatedVendor("first"), GatedVendor("second")
    r = rig(store, first, second, hedge=WAIT)
    first.answer(accepted("first-1"))
    receipt = await r.deliverer.submit(OTP)
    assert receipt.vendor == "first" and second.calls == 0
    attempts = await events_of(store, receipt.id)
    assert [d.get("hedge") for _, d in attempts] == [None]


async def test_a_failed_hedge_leaves_the_decision_to_the_first_attempt(
    store: SqliteStore,
) -> None:
    slow, failing = GatedVendor("slow"), GatedVendor("failing")
    r = rig(store, slow, failing)
    failing.answer(retriable("503"))
    submitted = asyncio.create_task(r.deliverer.submit(OTP))
    await asyncio.wait_for(failing.started.wait(), WAIT)
    slow.answer(accepted("slow-1"))
    receipt = await asyncio.wait_for(submitted, WAIT)
    assert receipt.vendor == "slow" and receipt.state is MessageState.SENT
    attempts = await events_of(store, receipt.id)
    assert [(v, d["outcome"], d["hedge"]) for v, d in attempts] == [
        ("failing", "retriable", "lost"),
        ("slow", "accepted", "won"),
    ]


async def test_both_racers_failing_goes_on_down_the_plan(store: SqliteStore) -> None:
    a, b, c = GatedVendor("a"), GatedVendor("b"), GatedVendor("c")
    r = rig(store, a, b, c)
    b.answer(retriable("503"))
    c.answer(accepted("c-1"))
    submitted = asyncio.create_task(r.deliverer.submit(OTP))
    await asyncio.wait_for(b.started.wait(), WAIT)
    a.answer(retriable("timeout"))
    receipt = await asyncio.wait_for(submitted, WAIT)
    assert receipt.vendor == "c"
    attempts = await events_of(store, receipt.id)
    assert [(v, d.get("hedge")) for v, d in attempts] == [("b", None), ("a", None), ("c", None)]


async def test_only_the_classes_that_ask_for_it_are_hedged(store: SqliteStore) -> None:
    slow, other = GatedVendor("slow"), GatedVendor("other")
    r = rig(store, slow, other)
    submitted = asyncio.create_task(r.deliverer.submit(make_message()))  # transactional
    await asyncio.wait_for(slow.started.wait(), WAIT)
    await asyncio.sleep(HEDGE * 4)  # past the delay an otp message would be hedged after
    assert other.calls == 0
    slow.answer(accepted("slow-1"))
    assert (await asyncio.wait_for(submitted, WAIT)).vendor == "slow"


async def test_retries_from_the_spool_are_never_hedged(store: SqliteStore) -> None:
    slow, other = GatedVendor("slow"), GatedVendor("other")
    r = rig(store, slow, other)
    record = await spool(store, "m-1", OTP, due=T0)
    leased = await store.lease_due(now=T0, owner="n", lease_seconds=60.0, limit=1)
    assert [item.record.id for item in leased] == [record.id]
    retried = asyncio.create_task(r.deliverer.redeliver(leased[0], "n"))
    await asyncio.wait_for(slow.started.wait(), WAIT)
    await asyncio.sleep(HEDGE * 4)
    assert other.calls == 0
    slow.answer(accepted("slow-1"))
    assert await asyncio.wait_for(retried, WAIT) is MessageState.SENT
    assert isinstance(leased[0], Leased)


async def test_a_p90_hedge_waits_the_first_vendors_recent_p90(store: SqliteStore) -> None:
    slow, fast = GatedVendor("slow"), GatedVendor("fast")
    r = rig(store, slow, fast, hedge="p90")
    for latency in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10):
        r.health.record("slow", Admission.NORMAL, Outcome.ACCEPTED, latency)
    assert r.health.recent_p90("slow") == 0.09
    fast.answer(accepted("fast-1"))
    started = asyncio.get_running_loop().time()
    receipt = await asyncio.wait_for(r.deliverer.submit(OTP), WAIT)
    waited = asyncio.get_running_loop().time() - started
    assert receipt.vendor == "fast" and waited >= 0.09
    slow.answer(accepted("slow-1"))
    await r.deliverer.settle()
