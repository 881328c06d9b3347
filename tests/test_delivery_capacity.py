"""The Deliverer with rate limits, quotas, ESP-told waits and warm-up caps (fake clocks).

A vendor at its limit is left out of the plan, not failed and not counted
against its health; a warm-up cap spills to the other vendors and is only
exceeded when no other vendor takes the message, which the attempt records.
"""

from __future__ import annotations

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
    rate_limited,
    retriable,
    spool,
)

from mailmux.config_limits import RateLimit
from mailmux.health import HealthState
from mailmux.message import Message
from mailmux.spool.base import EventKind, MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult
from mailmux.warmup import WarmupSchedule, utc_day

BULK = make_message(traffic_class="bulk")
OTP = make_message(traffic_class="otp")
PLAIN = make_message()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_store(tmp_path / "spool.db", clock=FakeClock(T0)) as store:
        yield store


def two(store: SqliteStore, **kwargs: object) -> Rig:
    """Vendors a (weight 1) and b (a weight-0 fallback), both accepting."""
    vendors = [ScriptedVendor("a", then=accepted("a-id")), ScriptedVendor("b", then=accepted())]
    return make_rig(store, vendors, wall=FakeClock(T0), **kwargs)  # type: ignore[arg-type]


def warming(store: SqliteStore, old_answers: AttemptResult, *, caps: tuple[int, ...]) -> Rig:
    """Vendors old and new at equal weights; new warms up from today with `caps`."""
    vendors = [ScriptedVendor("old", then=old_answers), ScriptedVendor("new", then=accepted())]
    return make_rig(
        store,
        vendors,
        wall=FakeClock(T0),
        weights={"old": 1.0, "new": 1.0},
        schedules={"new": WarmupSchedule(start=utc_day(T0), caps=caps)},
    )


async def attempted(rig: Rig, message_id: str) -> list[tuple[str | None, dict[str, object]]]:
    found = await rig.store.get(message_id)
    assert found is not None
    return [(e.vendor, dict(e.detail)) for e in found[1] if e.kind is EventKind.ATTEMPT]


def stats(rig: Rig, vendor: str) -> tuple[HealthState, int]:
    [s] = [s for s in rig.health.stats() if s.vendor == vendor]
    return s.state, s.consecutive_failures


async def send(rig: Rig, message: Message = PLAIN) -> tuple[str, str | None]:
    receipt = await rig.deliverer.submit(message)
    found = await rig.store.get(receipt.id)
    assert found is not None
    return receipt.id, found[0].vendor


async def test_a_vendor_at_its_rate_limit_is_skipped_not_failed(store: SqliteStore) -> None:
    rig = two(store, limits={"a": RateLimit(per_second=1.0)})

    _, first = await send(rig)
    second_id, second = await send(rig)  # the same instant: a's one token is gone

    assert (first, second) == ("a", "b")
    assert [vendor for vendor, _ in await attempted(rig, second_id)] == ["b"]
    assert stats(rig, "a") == (HealthState.HEALTHY, 0)
    rig.monotonic.advance(1.0)  # a new token
    assert (await send(rig))[1] == "a"
    assert len(rig.vendor("a").calls) == 2


async def test_a_message_whose_every_vendor_is_at_its_limit_waits_for_a_token(
    store: SqliteStore,
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", then=accepted())],
        wall=FakeClock(T0),
        limits={"a": RateLimit(per_second=4.0, burst=1)},
    )
    await send(rig)

    receipt = await rig.deliverer.submit(make_message())

    assert receipt.state is MessageState.QUEUED
    found = await rig.store.get(receipt.id)
    assert found is not None
    record, events = found
    assert record.attempts == 0 and len(rig.vendor("a").calls) == 1
    # Not a back-off of up to base_delay: the quarter second until a's next token.
    assert record.next_attempt_at == pytest.approx(T0 + 0.25)
    assert EventKind.ATTEMPT not in [e.kind for e in events]


async def test_a_429_with_retry_after_skips_the_vendor_until_then_without_blame(
    store: SqliteStore,
) -> None:
    vendors = [
        ScriptedVendor("a", rate_limited(30.0), then=accepted()),
        ScriptedVendor("b", then=accepted()),
    ]
    rig = make_rig(store, vendors, wall=FakeClock(T0))

    assert (await send(rig))[1] == "b"  # a answered 429, b took it
    assert stats(rig, "a") == (HealthState.HEALTHY, 0)
    rig.monotonic.advance(29.0)
    assert (await send(rig))[1] == "b"
    assert len(rig.vendor("a").calls) == 1  # a was not asked while it said to wait
    rig.monotonic.advance(1.0)
    assert (await send(rig))[1] == "a"


async def test_a_daily_quota_counts_every_message_of_the_utc_day(store: SqliteStore) -> None:
    rig = two(store, limits={"a": RateLimit(per_day=2)})

    vendors = [(await send(rig))[1] for _ in range(3)]

    assert vendors == ["a", "a", "b"]
    usage = rig.deliverer.capacity.usage
    assert (usage.sent("a"), usage.sent("b")) == (2, 1)


async def test_a_warm_up_cap_sends_exactly_n_and_spills_the_rest(store: SqliteStore) -> None:
    rig = warming(store, accepted(), caps=(3, 6))

    sent = [(await send(rig))[1] for _ in range(30)]

    assert sent.count("new") == 3 and sent.count("old") == 27
    assert len(rig.vendor("new").calls) == 3


async def test_the_cap_is_exceeded_only_when_no_other_vendor_takes_it_and_that_is_recorded(
    store: SqliteStore,
) -> None:
    rig = warming(store, retriable(), caps=(0,))

    message_id, vendor = await send(rig)

    assert vendor == "new"
    [(first, plain), (second, over)] = await attempted(rig, message_id)
    assert (first, second) == ("old", "new")
    assert "over_cap" not in plain and over["over_cap"] is True
    assert rig.deliverer.capacity.usage.sent("new") == 1


async def test_the_urgent_reserve_is_left_to_classes_above_the_least_urgent(
    store: SqliteStore,
) -> None:
    # A burst of 10 at 100/s keeps 5 tokens that only urgent messages may take.
    rig = two(store, limits={"a": RateLimit(per_second=100.0, burst=10)})

    bulk = [(await send(rig, BULK))[1] for _ in range(6)]
    otp = [(await send(rig, OTP))[1] for _ in range(5)]

    assert bulk == ["a"] * 5 + ["b"]
    assert otp == ["a"] * 5


async def test_a_retry_never_takes_the_urgent_reserve(store: SqliteStore) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", then=accepted())],
        wall=FakeClock(T0),
        limits={"a": RateLimit(per_second=100.0, burst=10)},
    )
    for _ in range(5):
        await send(rig, BULK)  # down to the reserve
    await spool(store, "m-retry", make_message(), due=T0)
    [leased] = await store.lease_due(now=T0, owner="w", lease_seconds=60, limit=1)

    state = await rig.deliverer.redeliver(leased, "w")

    assert state is MessageState.QUEUED
    found = await store.get("m-retry")
    assert found is not None
    assert found[0].attempts == 0 and len(rig.vendor("a").calls) == 5
    assert found[0].next_attempt_at == pytest.approx(T0 + 0.01)  # one token at 100/s
