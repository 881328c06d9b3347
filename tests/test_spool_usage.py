"""The SQLite store's usage counters: atomic increments per (vendor, day), on real files."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from mailmux.spool.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore
from mailmux.usage_writer import UsageWriter
from mailmux.warmup import DailyUsage

NOON = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC).timestamp()


async def test_counts_add_up_per_vendor_and_day_and_survive_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    store = SqliteStore(path)
    await store.open()
    await store.add_usage({("a", "2024-05-01"): 3, ("b", "2024-05-01"): 1})
    await store.add_usage({("a", "2024-05-01"): 2, ("a", "2024-05-02"): 7})
    await store.add_usage({})
    assert await store.usage("2024-05-01") == {"a": 5, "b": 1}
    await store.close()

    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.usage("2024-05-01") == {"a": 5, "b": 1}
        assert await again.usage("2024-05-02") == {"a": 7}
        assert await again.usage("2024-04-30") == {}
    finally:
        await again.close()


async def test_two_stores_on_one_file_add_to_the_same_counters(tmp_path: Path) -> None:
    """Two writers (as two nodes would be) increment; neither overwrites the other."""
    path = str(tmp_path / "spool.db")
    one, two = SqliteStore(path), SqliteStore(path)
    await one.open()
    await two.open()
    try:
        await asyncio.gather(
            *(store.add_usage({("a", "2024-05-01"): 1}) for _ in range(50) for store in (one, two))
        )
        assert await one.usage("2024-05-01") == {"a": 100}
    finally:
        await one.close()
        await two.close()


async def test_one_batch_is_one_transaction(tmp_path: Path) -> None:
    """A batch whose second count cannot be stored leaves the first one out too."""
    store = SqliteStore(str(tmp_path / "spool.db"))
    await store.open()
    try:
        with pytest.raises(OverflowError):
            await store.add_usage({("a", "2024-05-01"): 1, ("b", "2024-05-01"): 2**70})
        assert await store.usage("2024-05-01") == {}
    finally:
        await store.close()


async def test_a_version_3_spool_gains_the_usage_table(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as raw:
        for statements in _MIGRATIONS[:3]:
            for statement in statements:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 3")
    store = SqliteStore(str(path))
    await store.open()
    try:
        assert await store.usage("2024-05-01") == {}
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_the_writer_seeds_today_and_writes_only_what_was_sent_since(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "spool.db"))
    await store.open()
    try:
        await store.add_usage({("a", "2024-05-01"): 40, ("a", "2024-04-30"): 9})
        usage = DailyUsage(wall=lambda: NOON)
        writer = UsageWriter(usage, store)
        await writer.load()
        assert usage.sent("a") == 40  # today's only
        for sent in (True, True, False):
            assert usage.reserve("a", None)
            usage.settle("a", sent)
        assert usage.sent("a") == 42
        await writer.flush()
        await writer.flush()  # nothing new: nothing added twice
        assert await store.usage("2024-05-01") == {"a": 42}
    finally:
        await store.close()


async def test_a_failed_write_is_kept_for_the_next_flush(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "spool.db"))
    await store.open()
    usage = DailyUsage(wall=lambda: NOON)
    writer = UsageWriter(usage, store)
    assert usage.reserve("a", None)
    usage.settle("a", sent=True)
    real = store.add_usage

    async def broken(counts: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    store.add_usage = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(sqlite3.OperationalError):
            await writer.flush()
        store.add_usage = real  # type: ignore[method-assign]
        await writer.flush()
        assert await store.usage("2024-05-01") == {"a": 1}
    finally:
        await store.close()
