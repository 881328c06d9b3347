"""The idempotency guard: one key, one delivery, the same receipt for every retry of it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import (
    T0,
    FakeClock,
    Rig,
    ScriptedVendor,
    accepted,
    make_message,
    make_rig,
    opened_store,
    retriable,
)

from mailmux.app import App
from mailmux.config import Config
from mailmux.idempotency import IdempotencyGuard, IdempotencyKeyReused
from mailmux.message import Message, to_payload
from mailmux.receipts import Receipt
from mailmux.spool.base import MessageRecord, MessageState
from mailmux.spool.sqlite import SqliteStore

WAIT = 5.0
RETENTION = 3600.0
HASH = "a1" * 32  # the hash of the request that first carried the key
OTHER = "b2" * 32


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, wall: FakeClock) -> AsyncIterator[SqliteStore]:
    # The store frees a key after the same retention the guard uses, as the app should.
    async with opened_store(tmp_path / "spool.db", clock=wall, retention=RETENTION) as store:
        yield store


class CountingDeliver:
    """`deliver` for the guard: submits one message through a real Deliverer, counted."""

    def __init__(self, rig: Rig, message: Message, request_hash: str = "") -> None:
        self.rig = rig
        self.message = message
        self.request_hash = request_hash or HASH
        self.calls = 0

    async def __call__(self) -> Receipt:
        self.calls += 1
        return await self.rig.deliverer.submit(self.message, request_hash=self.request_hash)


class GatedDeliver:
    """`deliver` that holds until `gate` opens, then answers `result` (or raises it)."""

    def __init__(self, result: Receipt | Exception) -> None:
        self.result = result
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self) -> Receipt:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def guard_for(store: SqliteStore, wall: FakeClock) -> IdempotencyGuard:
    return IdempotencyGuard(store, retention=RETENTION, clock=wall)


async def test_a_repeated_key_replays_the_first_receipt(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", then=accepted("esp-1"))], wall=wall)
    deliver = CountingDeliver(rig, make_message(idempotency_key="k"))
    guard = guard_for(store, wall)

    first, first_replayed = await guard.run("k", HASH, deliver)
    again, again_replayed = await guard.run("k", HASH, deliver)

    assert first.state is MessageState.SENT and not first_replayed
    assert again == first and again_replayed
    assert deliver.calls == 1
    assert len(rig.vendor("a").calls) == 1


async def test_a_restarted_guard_replays_from_the_store(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", then=accepted("esp-1"))], wall=wall)
    deliver = CountingDeliver(rig, make_message(idempotency_key="k"))
    first, _ = await guard_for(store, wall).run("k", HASH, deliver)
    await store.flush()

    again, replayed = await guard_for(store, wall).run("k", HASH, deliver)  # an empty cache

    assert (again, replayed) == (first, True)
    assert deliver.calls == 1


async def test_concurrent_requests_with_one_key_deliver_once(
    store: SqliteStore, wall: FakeClock
) -> None:
    # A queued receipt that is not in the store: only the in-flight map can dedupe these.
    receipt = Receipt("m1", MessageState.QUEUED)
    deliver = GatedDeliver(receipt)
    guard = guard_for(store, wall)

    tasks = [asyncio.create_task(guard.run("k", HASH, deliver)) for _ in range(20)]
    await asyncio.wait_for(deliver.entered.wait(), WAIT)  # the other 19 are waiting by now
    deliver.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)

    assert deliver.calls == 1
    assert {r for r, _ in results} == {receipt}
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 19


async def test_a_replay_answers_as_the_first_answer_did_after_the_message_moved_on(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", retriable()), ScriptedVendor("b", retriable())],
        wall=wall,
    )
    deliver = CountingDeliver(rig, make_message(idempotency_key="k"))
    guard = guard_for(store, wall)

    first, _ = await guard.run("k", HASH, deliver)
    assert first.state is MessageState.QUEUED

    # The Retrier sends it meanwhile.
    [leased] = await store.lease_due(now=T0 + 300, owner="w", lease_seconds=60, limit=1)
    sent = dataclasses.replace(
        leased.record,
        state=MessageState.SENT,
        vendor="b",
        vendor_message_id="esp-b-7",
        next_attempt_at=None,
    )
    await store.update(sent, [], owner="w")

    cached, cached_replayed = await guard.run("k", HASH, deliver)
    stored, stored_replayed = await guard_for(store, wall).run("k", HASH, deliver)

    assert (cached, cached_replayed) == (first, True)
    assert (stored, stored_replayed) == (first, True)  # from the store: still the first answer
    assert stored == Receipt(first.id, MessageState.QUEUED)
    assert deliver.calls == 1


async def test_a_key_reused_with_another_request_is_refused_from_memory_and_store(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", then=accepted("esp-1"))], wall=wall)
    deliver = CountingDeliver(rig, make_message(idempotency_key="k"))
    first, _ = await guard_for(store, wall).run("k", HASH, deliver)
    await store.flush()
    restarted = guard_for(store, wall)  # nothing cached: the store must know the hash

    with pytest.raises(IdempotencyKeyReused):
        await restarted.run("k", OTHER, deliver)
    again, replayed = await restarted.run("k", HASH, deliver)
    with pytest.raises(IdempotencyKeyReused):
        await restarted.run("k", OTHER, deliver)  # now from the cache

    assert (again, replayed) == (first, True)
    assert deliver.calls == 1
    assert len(rig.vendor("a").calls) == 1


async def test_a_concurrent_request_with_the_key_and_another_body_is_refused(
    store: SqliteStore, wall: FakeClock
) -> None:
    receipt = Receipt("m1", MessageState.SENT, "a", "esp-1")
    deliver = GatedDeliver(receipt)
    guard = guard_for(store, wall)

    first = asyncio.create_task(guard.run("k", HASH, deliver))
    await asyncio.wait_for(deliver.entered.wait(), WAIT)
    with pytest.raises(IdempotencyKeyReused):
        await guard.run("k", OTHER, deliver)
    deliver.gate.set()

    assert await asyncio.wait_for(first, WAIT) == (receipt, False)
    assert deliver.calls == 1


async def test_keys_older_than_the_retention_are_not_replayed(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", then=accepted())], wall=wall)
    deliver = CountingDeliver(rig, make_message(idempotency_key="k"))
    guard = guard_for(store, wall)
    first, _ = await guard.run("k", HASH, deliver)
    await store.flush()

    wall.advance(RETENTION - 1.0)
    within, within_replayed = await guard.run("k", HASH, deliver)
    wall.advance(2.0)
    after, after_replayed = await guard.run("k", HASH, deliver)

    assert (within, within_replayed) == (first, True)
    assert not after_replayed and after.id != first.id
    assert deliver.calls == 2
    await store.flush()  # the new message now holds the key
    found = await store.find_by_idempotency_key("k", since=wall() - RETENTION)
    assert found is not None and found.id == after.id


async def test_a_failed_delivery_reaches_every_waiter_and_frees_the_key(
    store: SqliteStore, wall: FakeClock
) -> None:
    failing = GatedDeliver(RuntimeError("store unavailable"))
    guard = guard_for(store, wall)

    tasks = [asyncio.create_task(guard.run("k", HASH, failing)) for _ in range(5)]
    await asyncio.wait_for(failing.entered.wait(), WAIT)
    failing.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)

    assert failing.calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "store unavailable" for r in results)

    receipt = Receipt("m2", MessageState.SENT, "a", "esp-2")
    working = GatedDeliver(receipt)
    working.gate.set()
    assert await guard.run("k", HASH, working) == (receipt, False)
    assert working.calls == 1


async def test_the_app_store_frees_keys_after_the_configured_retention(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "store": f"sqlite:///{tmp_path / 'app.db'}",
            "node_id": "test-node",
            "idempotency": {"retention_seconds": 60},
            "vendors": {"box": {"kind": "sandbox", "weight": 1}},
        }
    )
    app = App(config)
    await app.store.open()
    try:
        now = time.time()
        payload = to_payload(make_message(idempotency_key="k"))
        old = MessageRecord(
            id="old",
            state=MessageState.QUEUED,
            created_at=now - 120.0,  # past the 60 s retention
            updated_at=now - 120.0,
            traffic_class="transactional",
            idempotency_key="k",
            next_attempt_at=now,
        )
        await app.store.insert(old, [], payload=payload, durable=True)
        new = dataclasses.replace(old, id="new", created_at=now, updated_at=now)

        await app.store.insert(new, [], payload=payload, durable=True)

        found = await app.store.find_by_idempotency_key("k", since=now - 60.0)
        assert found is not None and found.id == "new"
    finally:
        await app.store.close()
