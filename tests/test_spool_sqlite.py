"""The SQLite spool against the Store contract, on real files in tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mailmux.spool import open_store
from mailmux.spool.base import (
    Event,
    EventKind,
    InDoubt,
    LeaseLost,
    MessageRecord,
    MessageState,
    StoreUnavailable,
)
from mailmux.spool.sqlite import _LEASE, _MIGRATIONS, SCHEMA_VERSION, SqliteStore

T0 = 1_700_000_000.0
DAY = 86400.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def queued(
    message_id: str,
    *,
    due: float = T0,
    key: str | None = None,
    created_at: float = T0,
    priority: int = 0,
) -> MessageRecord:
    return MessageRecord(
        id=message_id,
        state=MessageState.QUEUED,
        created_at=created_at,
        updated_at=created_at,
        traffic_class="transactional",
        idempotency_key=key,
        next_attempt_at=due,
        priority=priority,
    )


def sent(message_id: str, *, key: str | None = None) -> MessageRecord:
    return MessageRecord(
        id=message_id,
        state=MessageState.SENT,
        created_at=T0,
        updated_at=T0,
        traffic_class="otp",
        idempotency_key=key,
        vendor="primary",
        vendor_message_id=f"esp-{message_id}",
        attempts=1,
    )


def received(message_id: str) -> list[Event]:
    return [Event(message_id, T0, EventKind.RECEIVED)]


StoreFactory = Callable[..., SqliteStore]


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Stores on tmp_path/spool.db (opened by the test), all closed at the end."""
    stores: list[SqliteStore] = []

    def make(**options: object) -> SqliteStore:
        options.setdefault("clock", FakeClock())  # idempotency keys made at T0 stay young
        store = SqliteStore(str(tmp_path / "spool.db"), **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> SqliteStore:
    store = make_store()
    await store.open()
    return store


async def reopen(store: SqliteStore, make_store: StoreFactory) -> SqliteStore:
    await store.close()
    fresh = make_store()
    await fresh.open()
    return fresh


async def test_durable_insert_survives_reopen(store: SqliteStore, make_store: StoreFactory) -> None:
    events = [
        Event("m1", T0, EventKind.RECEIVED, detail={"via": "http"}),
        Event("m1", T0 + 1, EventKind.ATTEMPT, "primary", {"outcome": "retriable", "status": 503}),
        Event("m1", T0 + 1, EventKind.SPOOLED, detail={"next_attempt_at": T0 + 30}),
    ]
    record = queued("m1", due=T0 + 30, key="k1")
    await store.insert(record, events, payload=b"mime", durable=True)

    store = await reopen(store, make_store)

    assert await store.get("m1") == (record, events)
    assert await store.get("missing") is None


async def test_write_behind_is_readable_at_once_and_durable_after_flush(
    store: SqliteStore, make_store: StoreFactory
) -> None:
    record = sent("m1", key="k1")
    await store.insert(record, received("m1"), durable=False)

    assert await store.get("m1") == (record, received("m1"))
    assert await store.find_by_idempotency_key("k1", since=T0) == record

    await store.flush()
    fresh = make_store()  # a second store sees only what is on disk
    await fresh.open()
    assert await fresh.get("m1") == (record, received("m1"))


async def test_committed_write_behind_row_reads_from_disk(store: SqliteStore) -> None:
    await store.insert(queued("m"), [], payload=b"x", durable=False)
    await store.flush()
    [leased] = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=1)
    done = dataclasses.replace(leased.record, state=MessageState.SENT, next_attempt_at=None)

    await store.update(done, [], owner="w")

    stored = await store.get("m")
    assert stored is not None and stored[0] == done


async def test_write_behind_conflict_at_commit_keeps_message_without_key(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.insert(sent("a", key="dup"), [], durable=True)

    await store.insert(sent("b", key="dup"), received("b"), durable=False)
    await store.flush()

    stored = await store.get("b")
    assert stored is not None and stored[0].idempotency_key is None
    assert stored[1] == received("b")
    assert "idempotency key already held by a" in caplog.text


async def test_close_commits_pending_write_behind(
    store: SqliteStore, make_store: StoreFactory
) -> None:
    for i in range(100):
        await store.insert(sent(f"m{i}"), received(f"m{i}"), durable=False)

    store = await reopen(store, make_store)

    counts = await store.count_by_state()
    assert counts[MessageState.SENT] == 100


LONG_LINGER = 10.0  # far longer than any test may take: waiting for it would show


async def on_disk(make_store: StoreFactory, *message_ids: str) -> list[str]:
    """Which of `message_ids` a second store (reading only the file) finds."""
    reader = make_store()
    await reader.open()
    return [message_id for message_id in message_ids if await reader.get(message_id) is not None]


async def next_commit(store: SqliteStore, before: int) -> None:
    """Watch the commit counter: the batch under test has no future to await."""
    while store.commits == before:
        await asyncio.sleep(0.001)


async def test_write_behind_lingers_into_one_commit(
    make_store: StoreFactory,
) -> None:
    store = make_store(write_behind_linger=LONG_LINGER)
    await store.open()
    before = store.commits

    for i in range(50):
        await store.insert(sent(f"m{i}"), received(f"m{i}"), durable=False)
        await asyncio.sleep(0)  # loop turns in between: without a linger each could commit
    await store.flush()

    assert store.commits - before == 1
    store = await reopen(store, make_store)
    assert (await store.count_by_state())[MessageState.SENT] == 50
    assert await store.get("m49") == (sent("m49"), received("m49"))


async def test_full_write_behind_batch_starts_without_the_linger(
    make_store: StoreFactory,
) -> None:
    store = make_store(write_behind_linger=LONG_LINGER, write_behind_batch=10)
    await store.open()
    before = store.commits

    for i in range(10):
        await store.insert(sent(f"m{i}"), [], durable=False)

    await asyncio.wait_for(next_commit(store, before), timeout=2)
    assert await on_disk(make_store, "m0", "m9") == ["m0", "m9"]


async def test_lingering_write_behind_commits_on_its_own(make_store: StoreFactory) -> None:
    store = make_store(write_behind_linger=0.01)
    await store.open()
    before = store.commits

    await store.insert(sent("m"), [], durable=False)

    await asyncio.wait_for(next_commit(store, before), timeout=2)  # nobody flushes
    assert await on_disk(make_store, "m") == ["m"]


async def test_durable_insert_does_not_wait_for_the_linger(make_store: StoreFactory) -> None:
    store = make_store(write_behind_linger=LONG_LINGER)
    await store.open()
    await store.insert(sent("behind"), received("behind"), durable=False)
    before = store.commits

    await asyncio.wait_for(
        store.insert(queued("spooled"), [], payload=b"x", durable=True), timeout=2
    )

    assert store.commits - before == 1  # the lingering row rode along in the same commit
    assert await on_disk(make_store, "behind", "spooled") == ["behind", "spooled"]


async def test_flush_does_not_wait_for_the_linger(make_store: StoreFactory) -> None:
    store = make_store(write_behind_linger=LONG_LINGER)
    await store.open()
    await store.insert(sent("m"), received("m"), durable=False)

    await asyncio.wait_for(store.flush(), timeout=2)

    assert await on_disk(make_store, "m") == ["m"]


async def test_close_persists_lingering_write_behind(make_store: StoreFactory) -> None:
    store = make_store(write_behind_linger=LONG_LINGER)
    await store.open()
    await store.insert(sent("m"), received("m"), durable=False)

    await asyncio.wait_for(store.close(), timeout=2)

    assert await on_disk(make_store, "m") == ["m"]


async def test_conflicts_in_a_lingering_batch_spare_the_other_rows(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(write_behind_linger=LONG_LINGER)
    await store.open()
    await store.insert(queued("a", key="dup"), [], payload=b"x", durable=True)
    before = store.commits

    for i in range(3):
        await store.insert(sent(f"m{i}"), received(f"m{i}"), durable=False)
    await store.insert(sent("b", key="dup"), received("b"), durable=False)  # key taken on disk
    await store.insert(sent("c", key="fresh"), received("c"), durable=False)
    await store.insert(sent("a"), received("a"), durable=False)  # id taken: fails alone
    for i in range(3, 6):
        await store.insert(sent(f"m{i}"), received(f"m{i}"), durable=False)
    await store.flush()

    assert store.commits - before == 1
    store = await reopen(store, make_store)
    for i in range(6):
        assert await store.get(f"m{i}") == (sent(f"m{i}"), received(f"m{i}"))
    assert await store.get("b") == (
        dataclasses.replace(sent("b"), idempotency_key=None),
        received("b"),
    )
    assert await store.get("c") == (sent("c", key="fresh"), received("c"))
    assert await store.get("a") == (queued("a", key="dup"), [])
    assert "idempotency key already held by a" in caplog.text
    assert "message a: write-behind insert failed" in caplog.text


@pytest.mark.parametrize("options", [{"write_behind_linger": -1.0}, {"write_behind_batch": 0}])
def test_bad_write_behind_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="write_behind"):
        SqliteStore("spool.db", **options)  # type: ignore[arg-type]


async def test_idempotency_conflict_fails_only_its_caller(store: SqliteStore) -> None:
    await store.insert(queued("first", key="dup"), [], payload=b"x", durable=True)

    results = await asyncio.gather(
        *(
            store.insert(
                queued(f"m{i}", key="dup" if i == 25 else f"k{i}"), [], payload=b"x", durable=True
            )
            for i in range(50)
        ),
        return_exceptions=True,
    )

    failures = [(i, r) for i, r in enumerate(results) if r is not None]
    assert len(failures) == 1
    assert failures[0][0] == 25 and isinstance(failures[0][1], KeyError)
    assert await store.get("m25") is None
    assert (await store.count_by_state())[MessageState.QUEUED] == 50  # "first" + 49
    found = await store.find_by_idempotency_key("dup", since=T0)
    assert found is not None and found.id == "first"


async def test_write_behind_conflict_with_pending_key_raises(store: SqliteStore) -> None:
    await store.insert(sent("a", key="dup"), [], durable=False)

    with pytest.raises(KeyError):
        await store.insert(sent("b", key="dup"), [], durable=False)


async def test_expired_idempotency_key_is_reusable(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, idempotency_retention=DAY)
    await store.open()
    await store.insert(queued("old", key="k"), [], payload=b"x", durable=True)

    clock.now = T0 + DAY / 2
    with pytest.raises(KeyError):
        await store.insert(queued("young", key="k"), [], payload=b"x", durable=True)

    clock.now = T0 + DAY + 1
    new = queued("new", key="k", created_at=clock.now)
    await store.insert(new, [], payload=b"x", durable=True)

    assert await store.find_by_idempotency_key("k", since=clock.now - DAY) == new
    old = await store.get("old")
    assert old is not None and old[0].idempotency_key is None


async def test_find_by_idempotency_key_respects_since(store: SqliteStore) -> None:
    await store.insert(queued("m", key="k"), [], payload=b"x", durable=True)

    assert await store.find_by_idempotency_key("k", since=T0 + 1) is None
    assert await store.find_by_idempotency_key("other", since=0) is None


async def test_lease_due_takes_due_rows_oldest_first(store: SqliteStore) -> None:
    for name, due in [("late", T0 + 30), ("b", T0 + 20), ("a", T0 + 10)]:
        await store.insert(queued(name, due=due), [], payload=name.encode(), durable=True)

    leased = await store.lease_due(now=T0 + 25, owner="w1", lease_seconds=60, limit=10)

    assert [(item.record.id, item.payload) for item in leased] == [("a", b"a"), ("b", b"b")]
    assert {item.lease_until for item in leased} == {T0 + 85}
    assert await store.lease_due(now=T0 + 25, owner="w2", lease_seconds=60, limit=10) == []
    later = await store.lease_due(now=T0 + 31, owner="w2", lease_seconds=60, limit=10)
    assert [item.record.id for item in later] == ["late"]


async def test_lease_due_honours_limit(store: SqliteStore) -> None:
    for i in range(5):
        await store.insert(queued(f"m{i}", due=T0 + i), [], payload=b"x", durable=True)

    leased = await store.lease_due(now=T0 + 10, owner="w", lease_seconds=60, limit=3)

    assert [item.record.id for item in leased] == ["m0", "m1", "m2"]
    assert await store.lease_due(now=T0 + 10, owner="w", lease_seconds=60, limit=0) == []


async def test_lease_due_takes_the_most_urgent_first_then_the_earliest_due(
    store: SqliteStore,
) -> None:
    rows = [("bulk-old", 10, T0), ("otp-late", 100, T0 + 5), ("tx", 50, T0 + 1)]
    rows += [("otp-early", 100, T0 + 2), ("bulk-new", 10, T0 + 3), ("otp-future", 100, T0 + 99)]
    for name, priority, due in rows:
        record = queued(name, due=due, priority=priority)
        await store.insert(record, [], payload=b"x", durable=True)

    first = await store.lease_due(now=T0 + 10, owner="w", lease_seconds=60, limit=3)
    rest = await store.lease_due(now=T0 + 10, owner="w", lease_seconds=60, limit=10)

    assert [(item.record.id, item.record.priority) for item in first] == [
        ("otp-early", 100),
        ("otp-late", 100),
        ("tx", 50),
    ]
    assert [item.record.id for item in rest] == ["bulk-old", "bulk-new"]


async def test_lease_due_leaves_out_what_is_below_min_priority(store: SqliteStore) -> None:
    for name, priority in [("bulk", 10), ("tx", 50), ("otp", 100), ("custom", 11)]:
        await store.insert(queued(name, priority=priority), [], payload=b"x", durable=True)

    urgent = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=10, min_priority=11)
    left = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=10, min_priority=11)
    anything = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=10)

    assert [item.record.id for item in urgent] == ["otp", "tx", "custom"]
    assert left == []
    assert [item.record.id for item in anything] == ["bulk"]


async def test_the_priority_is_kept_with_the_record(
    store: SqliteStore, make_store: StoreFactory
) -> None:
    record = queued("m", priority=100)
    await store.insert(record, [], payload=b"x", durable=True)
    store = await reopen(store, make_store)
    [leased] = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=1)
    await store.update(dataclasses.replace(leased.record, attempts=1), [], owner="w")

    found = await store.get("m")

    assert leased.record == record
    assert found is not None and found[0].priority == 100


async def test_the_due_scan_walks_the_index_without_sorting(
    store: SqliteStore, tmp_path: Path
) -> None:
    await asyncio.gather(
        *(
            store.insert(
                queued(f"m{i}", due=T0 + i % 97, priority=(10, 50, 100)[i % 3]),
                [],
                payload=b"x",
                durable=False,
            )
            for i in range(20_000)
        )
    )
    await store.flush()
    due_scan = _LEASE[_LEASE.index("SELECT rowid") : _LEASE.rindex(")")]

    args = (-(2**63), T0 + 50, T0 + 50, 100)

    plans = []
    with sqlite3.connect(tmp_path / "spool.db") as raw:
        plans.append([row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {due_scan}", args)])
        raw.execute("ANALYZE")  # with statistics, as an operator's maintenance may leave them
        plans.append([row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {due_scan}", args)])

    walk = "SEARCH messages USING COVERING INDEX messages_due_by_priority (state=? AND priority>?)"
    assert plans == [[walk], [walk]]  # no "USE TEMP B-TREE FOR ORDER BY"


async def test_expired_lease_is_taken_over_and_old_owner_loses(store: SqliteStore) -> None:
    await store.insert(queued("m"), [], payload=b"x", durable=True)
    [mine] = await store.lease_due(now=T0, owner="crashed", lease_seconds=60, limit=1)

    [theirs] = await store.lease_due(now=T0 + 61, owner="w2", lease_seconds=60, limit=1)

    assert theirs.record.id == "m" and theirs.lease_until == T0 + 121
    done = dataclasses.replace(mine.record, state=MessageState.SENT, next_attempt_at=None)
    with pytest.raises(LeaseLost):
        await store.update(done, [Event("m", T0 + 62, EventKind.SENT)], owner="crashed")
    stored = await store.get("m")
    assert stored is not None
    assert stored[0].state is MessageState.QUEUED and stored[1] == []


async def test_update_without_lease_raises_lease_lost(store: SqliteStore) -> None:
    record = queued("m")
    await store.insert(record, [], payload=b"x", durable=True)

    with pytest.raises(LeaseLost):
        await store.update(record, [], owner="nobody")


async def test_lease_lost_fails_only_its_caller_in_a_batch(store: SqliteStore) -> None:
    for name in ("a", "b"):
        await store.insert(queued(name), [], payload=b"x", durable=True)
    leased = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=2)
    a, b = (dataclasses.replace(item.record, attempts=1) for item in leased)

    results = await asyncio.gather(
        store.update(a, [], owner="w"),
        store.update(b, [], owner="intruder"),
        return_exceptions=True,
    )

    assert results[0] is None and isinstance(results[1], LeaseLost)
    stored_a, stored_b = await store.get("a"), await store.get("b")
    assert stored_a is not None and stored_a[0].attempts == 1
    assert stored_b is not None and stored_b[0].attempts == 0


async def test_retry_keeps_payload_and_terminal_update_drops_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    await store.insert(queued("m", due=T0), received("m"), payload=b"body", durable=True)
    [first] = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=1)
    retry = dataclasses.replace(first.record, attempts=1, next_attempt_at=T0 + 10)
    await store.update(
        retry,
        [Event("m", T0, EventKind.RETRY_SCHEDULED, detail={"next_attempt_at": T0 + 10})],
        owner="w",
    )

    [second] = await store.lease_due(now=T0 + 10, owner="w", lease_seconds=60, limit=1)
    assert second.payload == b"body" and second.record.attempts == 1
    final = dataclasses.replace(
        second.record, state=MessageState.SENT, vendor="backup", attempts=2, next_attempt_at=None
    )
    await store.update(final, [Event("m", T0 + 11, EventKind.SENT, "backup")], owner="w")

    stored = await store.get("m")
    assert stored is not None and stored[0] == final
    assert [e.kind for e in stored[1]] == [
        EventKind.RECEIVED,
        EventKind.RETRY_SCHEDULED,
        EventKind.SENT,
    ]
    with sqlite3.connect(tmp_path / "spool.db") as raw:
        row = raw.execute("SELECT payload, lease_owner FROM messages WHERE id = 'm'").fetchone()
    assert row == (None, None)
    assert await store.lease_due(now=T0 + 100, owner="w", lease_seconds=60, limit=1) == []


async def test_release_leases_frees_only_that_owner(store: SqliteStore) -> None:
    for i in range(4):
        await store.insert(queued(f"m{i}", due=T0 + i), [], payload=b"x", durable=True)
    await store.lease_due(now=T0 + 10, owner="me", lease_seconds=60, limit=3)
    await store.lease_due(now=T0 + 10, owner="other", lease_seconds=60, limit=3)

    assert await store.release_leases("me") == 3

    retaken = await store.lease_due(now=T0 + 10, owner="next", lease_seconds=60, limit=10)
    assert [item.record.id for item in retaken] == ["m0", "m1", "m2"]


async def test_two_stores_on_one_file_never_lease_the_same_message(
    make_store: StoreFactory,
) -> None:
    first, second = make_store(), make_store()
    await first.open()
    await second.open()
    await asyncio.gather(
        *(
            first.insert(queued(f"m{i}", due=T0 + i % 7), [], payload=b"x", durable=True)
            for i in range(200)
        )
    )

    async def drain(store: SqliteStore, owner: str) -> list[str]:
        taken: list[str] = []
        while leased := await store.lease_due(now=T0 + 10, owner=owner, lease_seconds=60, limit=7):
            taken.extend(item.record.id for item in leased)
        return taken

    a, b = await asyncio.gather(drain(first, "a"), drain(second, "b"))

    assert len(a) + len(b) == 200
    assert set(a) | set(b) == {f"m{i}" for i in range(200)}
    assert not set(a) & set(b)


async def test_group_commit_batches_concurrent_durable_inserts(store: SqliteStore) -> None:
    before = store.commits

    await asyncio.gather(
        *(
            store.insert(queued(f"m{i}"), received(f"m{i}"), payload=b"x", durable=True)
            for i in range(200)
        )
    )

    assert store.commits - before < 200
    assert (await store.count_by_state())[MessageState.QUEUED] == 200


async def test_durable_inserts_progress_beside_a_busy_loop(store: SqliteStore) -> None:
    """Short callbacks back to back must not starve the commit thread of the GIL."""
    stop = asyncio.Event()

    async def busy() -> None:  # a saturated server: 0.1 ms callbacks, polling in between
        while not stop.is_set():
            started = time.perf_counter()
            while time.perf_counter() - started < 0.0001:
                pass
            await asyncio.sleep(0)

    async def spool() -> None:
        for i in range(100):
            await store.insert(queued(f"m{i}"), [], payload=b"x", durable=True)

    burner = asyncio.create_task(busy())
    try:
        await asyncio.wait_for(spool(), timeout=10)  # starved: minutes; lent the GIL: < 1 s
    finally:
        stop.set()
        await burner


async def test_count_by_state_reports_every_state(store: SqliteStore) -> None:
    assert await store.count_by_state() == dict.fromkeys(MessageState, 0)

    await store.insert(queued("q"), [], payload=b"x", durable=True)
    await store.insert(sent("s1"), [], durable=True)
    await store.insert(sent("s2"), [], durable=True)
    failed = dataclasses.replace(sent("f"), state=MessageState.FAILED, reason="bad recipient")
    await store.insert(failed, [], durable=True)

    assert await store.count_by_state() == {
        MessageState.QUEUED: 1,
        MessageState.SENT: 2,
        MessageState.FAILED: 1,
        MessageState.EXPIRED: 0,
    }


async def test_queued_insert_without_payload_or_due_time_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="payload"):
        await store.insert(queued("m"), [], durable=True)
    with pytest.raises(ValueError, match="next_attempt_at"):
        await store.insert(
            dataclasses.replace(queued("m"), next_attempt_at=None), [], payload=b"x", durable=True
        )


async def test_closed_store_refuses_work(store: SqliteStore) -> None:
    await store.close()

    with pytest.raises(RuntimeError):
        await store.insert(sent("m"), [], durable=True)
    with pytest.raises(RuntimeError):
        await store.get("m")


async def test_schema_version_is_recorded(store: SqliteStore, tmp_path: Path) -> None:
    await store.close()
    with sqlite3.connect(tmp_path / "spool.db") as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteStore(str(path))

    with pytest.raises(StoreUnavailable, match="newer"):
        await store.open()
    await store.close()  # a failed open leaves nothing to stop


async def test_a_version_1_spool_is_migrated_and_its_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        for statement in _MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO messages (id, state, created_at, updated_at, traffic_class,"
            " idempotency_key, next_attempt_at, payload)"
            " VALUES ('m', 'queued', ?, ?, 'otp', 'k', ?, x'00')",
            (T0, T0, T0),
        )
        raw.execute("PRAGMA user_version = 1")
    store = SqliteStore(str(path), clock=FakeClock())
    await store.open()
    try:
        found = await store.find_by_idempotency_key("k", since=0)
        [leased] = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=5)
    finally:
        await store.close()

    assert found is not None and (found.request_hash, found.answered) == (None, None)
    assert (leased.record.id, leased.payload, leased.in_doubt) == ("m", b"\x00", None)


async def test_a_version_4_spool_gives_its_queued_rows_their_built_in_priority(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        for statements in _MIGRATIONS[:4]:
            for statement in statements:
                raw.execute(statement)
        rows = [
            ("late", "otp", T0 + 1),
            ("early", "otp", T0),
            ("news", "newsletter", T0),  # a class of the config's: transactional's 50
            ("bulky", "bulk", T0),
        ]
        for name, traffic_class, due in rows:
            raw.execute(
                "INSERT INTO messages (id, state, created_at, updated_at, traffic_class,"
                " next_attempt_at, payload) VALUES (?, 'queued', ?, ?, ?, ?, x'00')",
                (name, T0, T0, traffic_class, due),
            )
        raw.execute("PRAGMA user_version = 4")
    store = SqliteStore(str(path), clock=FakeClock())
    await store.open()
    try:
        await store.insert(queued("new", due=T0 + 2, priority=10), [], payload=b"x", durable=True)
        leased = await store.lease_due(now=T0 + 5, owner="w", lease_seconds=60, limit=9)
        found = await store.get("early")
    finally:
        await store.close()

    assert [(item.record.id, item.record.priority) for item in leased] == [
        ("early", 100),
        ("late", 100),
        ("news", 50),
        ("bulky", 10),
        ("new", 10),
    ]
    assert found is not None and found[0].priority == 100
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'"
            " AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
    assert indexes == [("messages_due_by_priority",)]


async def test_the_request_hash_and_first_answer_are_kept_with_the_key(
    store: SqliteStore, make_store: StoreFactory
) -> None:
    record = dataclasses.replace(
        queued("m", key="k"), request_hash="ab" * 32, answered=MessageState.QUEUED
    )
    await store.insert(record, received("m"), payload=b"body", durable=True)
    store = await reopen(store, make_store)
    [leased] = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=5)
    await store.update(
        dataclasses.replace(leased.record, state=MessageState.SENT, next_attempt_at=None),
        [],
        owner="w",
    )

    found = await store.find_by_idempotency_key("k", since=0)

    assert found is not None and found.state is MessageState.SENT
    assert (found.request_hash, found.answered) == ("ab" * 32, MessageState.QUEUED)


async def test_an_attempt_begun_stays_in_doubt_across_a_restart_until_updated(
    store: SqliteStore, make_store: StoreFactory
) -> None:
    await store.insert(queued("m"), received("m"), payload=b"body", durable=True)
    assert len(await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=5)) == 1
    await store.begin_attempt("m", owner="w", vendor="primary", at=T0 + 1)
    store = await reopen(store, make_store)  # no update: the node died mid-attempt
    assert await store.release_leases("w") == 1

    [again] = await store.lease_due(now=T0 + 2, owner="w", lease_seconds=60, limit=5)
    retry = dataclasses.replace(again.record, attempts=2, next_attempt_at=T0 + 3)
    await store.update(retry, [], owner="w")
    [settled] = await store.lease_due(now=T0 + 3, owner="w", lease_seconds=60, limit=5)

    assert again.in_doubt == InDoubt("primary", T0 + 1)
    assert settled.in_doubt is None


async def test_begin_attempt_without_the_lease_raises_lease_lost(store: SqliteStore) -> None:
    await store.insert(queued("m"), received("m"), payload=b"body", durable=True)
    await store.lease_due(now=T0, owner="w1", lease_seconds=60, limit=5)

    with pytest.raises(LeaseLost):
        await store.begin_attempt("m", owner="w2", vendor="primary", at=T0)


_KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from mailmux.spool.base import MessageRecord, MessageState
    from mailmux.spool.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1])
        await store.open()
        record = MessageRecord("m", MessageState.QUEUED, 1.0, 1.0, "otp", next_attempt_at=1.0)
        await store.insert(record, [], payload=b"body", durable=True)
        print("done", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_durable_insert_survives_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "killed.db")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    store = SqliteStore(path)
    await store.open()
    try:
        [leased] = await store.lease_due(now=2.0, owner="w", lease_seconds=60, limit=1)
    finally:
        await store.close()
    assert leased.record.id == "m" and leased.payload == b"body"


class TestOpenStore:
    def test_relative_sqlite_url(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        store = open_store("sqlite:///mailmux.db")
        assert isinstance(store, SqliteStore) and store.path == "mailmux.db"

    def test_absolute_sqlite_url(self) -> None:
        store = open_store("sqlite:////var/lib/mailmux/spool.db")
        assert isinstance(store, SqliteStore) and store.path == "/var/lib/mailmux/spool.db"

    def test_postgresql_is_not_available_and_hides_the_url(self) -> None:
        with pytest.raises(ValueError, match="PostgreSQL store is not available yet") as info:
            open_store("postgresql://mailmux:s3cret@db:5432/mailmux")
        assert "s3cret" not in str(info.value)

    @pytest.mark.parametrize(
        "url",
        ["sqlite://:memory:", "sqlite://", "sqlite:///", "sqlite://host/x.db", "mysql://db", "x"],
    )
    def test_bad_urls(self, url: str) -> None:
        with pytest.raises(ValueError):
            open_store(url)

    async def test_opened_store_works(self, tmp_path: Path) -> None:
        store = open_store(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        try:
            await store.insert(sent("m"), [], durable=True)
            assert (await store.count_by_state())[MessageState.SENT] == 1
        finally:
            await store.close()


async def test_make_due_brings_every_later_queued_message_forward(store: SqliteStore) -> None:
    for name, due in [("soon", T0 + 1), ("later", T0 + 500), ("past", T0 - 5)]:
        await store.insert(queued(name, due=due), [], payload=b"x", durable=True)

    made = await store.make_due(T0 + 2)
    leased = await store.lease_due(now=T0 + 2, owner="w", lease_seconds=60, limit=10)

    assert made == 1  # only "later" was due after T0 + 2
    assert sorted(item.record.id for item in leased) == ["later", "past", "soon"]
    assert {item.record.id: item.record.next_attempt_at for item in leased} == {
        "past": T0 - 5,
        "soon": T0 + 1,
        "later": T0 + 2,
    }
