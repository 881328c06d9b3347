"""The SQLite store keeps overrides and their audit trail, across a reopen and a migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailmux.overrides import Override, OverrideKind
from mailmux.spool.base import AuditEvent
from mailmux.spool.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore

T0 = 1_700_000_000.0


def drain(vendor: str) -> Override:
    return Override(OverrideKind.DRAIN, vendor, expires_at=T0 + 60, reason="slow", created_by="cli")


async def test_overrides_and_audit_round_trip_and_survive_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    store = SqliteStore(path)
    await store.open()
    a, b = drain("a"), Override(OverrideKind.WEIGHTS, "b", weight=100.0)
    first = AuditEvent(
        at=T0, who="admin_keys[0]", action="drain", reason="slow", what=[a.to_json()]
    )
    await store.save_overrides({a.key: a.to_json(), b.key: b.to_json()}, audit=first)
    second = AuditEvent(
        at=T0 + 1, who="anonymous", action="restore", what=[{"vendor": "a"}], previous=[a.to_json()]
    )
    await store.save_overrides({}, remove=[a.key], audit=second)
    assert await store.list_overrides() == {b.key: b.to_json()}
    await store.close()

    again = SqliteStore(path)
    await again.open()
    try:
        stored = await again.list_overrides()
        assert [Override.from_json(d) for d in stored.values()] == [b]
        events = await again.list_audit(limit=10)
        assert [(e.id, e.who, e.action) for e in events] == [
            (1, "admin_keys[0]", "drain"),
            (2, "anonymous", "restore"),
        ]
        assert events[1].previous == [a.to_json()]
        assert events[0].reason == "slow"
        assert [e.id for e in await again.list_audit(limit=1)] == [2]  # the latest, oldest first
    finally:
        await again.close()


async def test_an_upsert_replaces_the_override_under_its_key(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "spool.db"))
    await store.open()
    try:
        for weight in (10.0, 20.0):
            o = Override(OverrideKind.WEIGHTS, "a", weight=weight)
            await store.save_overrides({o.key: o.to_json()}, audit=AuditEvent(T0, "cli", "weights"))
        assert [d["weight"] for d in (await store.list_overrides()).values()] == [20.0]
    finally:
        await store.close()


async def test_a_version_2_spool_gains_the_override_tables(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as raw:
        for statements in _MIGRATIONS[:2]:
            for statement in statements:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 2")
    store = SqliteStore(str(path))
    await store.open()
    try:
        assert await store.list_overrides() == {}
        assert await store.list_audit(limit=5) == []
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
