"""The Deliverer: outcomes turned into state, on a real SQLite store with fake vendors."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import (
    T0,
    Call,
    FakeClock,
    FixedRandom,
    Rig,
    ScriptedVendor,
    accepted,
    ambiguous,
    kinds,
    make_message,
    make_rig,
    opened_store,
    permanent,
    rate_limited,
    retriable,
    spool,
    vendor_config,
)

from mailmux.backoff import Backoff
from mailmux.classes import ClassBook
from mailmux.delivery import AmbiguousPolicy, DeliveryPolicy
from mailmux.health import Admission, HealthSettings, HealthState
from mailmux.message import from_payload
from mailmux.routing import Availability
from mailmux.spool.base import EventKind, Leased, MessageRecord, MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult, Outcome

RECEIVED, ATTEMPT, SENT = EventKind.RECEIVED, EventKind.ATTEMPT, EventKind.SENT
SPOOLED, RETRY_SCHEDULED = EventKind.SPOOLED, EventKind.RETRY_SCHEDULED
FAILED, EXPIRED = EventKind.FAILED, EventKind.EXPIRED


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
async def store(db: Path, wall: FakeClock) -> AsyncIterator[SqliteStore]:
    async with opened_store(db, clock=wall) as store:
        yield store


async def stored(store: SqliteStore, message_id: str) -> tuple[MessageRecord, list[EventKind]]:
    found = await store.get(message_id)
    if found is None:
        raise AssertionError(f"{message_id} is not in the store")
    return found[0], kinds(found[1])


def stored_payload(db: Path, message_id: str) -> bytes | None:
    """Read the payload column straight from the file (the Store API does not expose it)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT payload FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise AssertionError(f"{message_id} is not on disk")
    payload: bytes | None = row[0]
    return payload


def order_log(order: list[str], name: str) -> ScriptedVendor:
    """A vendor whose attempts are appended to a log shared across vendors."""
    return ScriptedVendor(name, on_send=lambda _: order.append(name))


# --- submit ---------------------------------------------------------------------------------


async def test_first_vendor_accepts(store: SqliteStore, db: Path, wall: FakeClock) -> None:
    rig = make_rig(
        store, [ScriptedVendor("a", accepted("esp-a-1")), ScriptedVendor("b")], wall=wall
    )
    message = make_message()

    receipt = await rig.deliverer.submit(message)

    assert receipt.state is MessageState.SENT
    assert (receipt.vendor, receipt.vendor_message_id) == ("a", "esp-a-1")
    assert rig.vendor("a").calls == [Call(message, rig.policy.attempt_timeout, receipt.id)]
    assert rig.vendor("b").calls == []
    # Write-behind: the answer did not wait for a commit, yet the record is readable.
    assert store.commits == 0
    found = await store.get(receipt.id)
    assert found is not None
    record, events = found
    assert kinds(events) == [RECEIVED, ATTEMPT, SENT]
    assert (record.state, record.vendor, record.vendor_message_id) == (
        MessageState.SENT,
        "a",
        "esp-a-1",
    )
    assert record.attempts == 1 and record.next_attempt_at is None
    assert events[1].vendor == "a" and events[1].detail["outcome"] == "accepted"
    assert events[2].detail == {"vendor_message_id": "esp-a-1"}

    await store.flush()
    async with opened_store(db, clock=wall) as other:  # another connection reads the disk
        assert await other.get(receipt.id) == (record, events)
    assert stored_payload(db, receipt.id) is None  # a sent message keeps no body


async def test_retriable_fails_over_to_the_next_vendor(store: SqliteStore, wall: FakeClock) -> None:
    rig = make_rig(
        store, [ScriptedVendor("a", retriable()), ScriptedVendor("b", accepted("esp-b"))], wall=wall
    )

    receipt = await rig.deliverer.submit(make_message())

    assert (receipt.state, receipt.vendor, receipt.vendor_message_id) == (
        MessageState.SENT,
        "b",
        "esp-b",
    )
    record, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, ATTEMPT, SENT]
    assert record.attempts == 2
    found = await store.get(receipt.id)
    assert found is not None
    assert [(e.vendor, e.detail["outcome"]) for e in found[1] if e.kind is ATTEMPT] == [
        ("a", "retriable"),
        ("b", "accepted"),
    ]
    stats = {s.vendor: s for s in rig.health.stats()}
    assert (stats["a"].requests, stats["a"].success_rate, stats["a"].consecutive_failures) == (
        1,
        0.0,
        1,
    )
    assert (stats["b"].requests, stats["b"].success_rate) == (1, 1.0)


@pytest.mark.parametrize(
    ("retry_afters", "max_delay", "expected_delay"),
    [
        ((30.0, 45.0), 300.0, 45.0),  # the longest Retry-After is the floor
        ((30.0, None), 300.0, 30.0),
        ((1000.0, 50.0), 300.0, 300.0),  # but never beyond max_delay
    ],
)
async def test_rate_limited_everywhere_spools_after_retry_after(
    store: SqliteStore,
    wall: FakeClock,
    retry_afters: tuple[float | None, float | None],
    max_delay: float,
    expected_delay: float,
) -> None:
    a_after, b_after = retry_afters
    rig = make_rig(
        store,
        [ScriptedVendor("a", rate_limited(a_after)), ScriptedVendor("b", rate_limited(b_after))],
        wall=wall,
        backoff=Backoff(base_delay=1.0, max_delay=max_delay),
    )

    receipt = await rig.deliverer.submit(make_message())

    assert receipt.state is MessageState.QUEUED and receipt.vendor is None
    record, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, ATTEMPT, SPOOLED]
    # Two attempts: the jittered window is at most 2 s, far below every Retry-After here.
    assert record.next_attempt_at == T0 + expected_delay


async def test_permanent_fails_without_trying_elsewhere(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(
        store,
        [
            ScriptedVendor("a", permanent("550 mailbox unavailable")),
            ScriptedVendor("b", accepted()),
        ],
        wall=wall,
    )

    receipt = await rig.deliverer.submit(make_message())

    assert receipt.state is MessageState.FAILED
    assert receipt.reason == "550 mailbox unavailable"
    assert rig.vendor("b").calls == []
    record, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, FAILED]
    assert record.reason == "550 mailbox unavailable" and record.next_attempt_at is None
    [a_stats, _] = rig.health.stats()
    assert a_stats.consecutive_failures == 0 and a_stats.success_rate == 1.0  # not a's fault


async def test_vendor_config_ejects_at_once(store: SqliteStore, wall: FakeClock) -> None:
    rig = make_rig(
        store, [ScriptedVendor("a", vendor_config()), ScriptedVendor("b", accepted())], wall=wall
    )

    receipt = await rig.deliverer.submit(make_message())

    assert (receipt.state, receipt.vendor) == (MessageState.SENT, "b")
    assert rig.health.availability() == {"a": Availability.EJECTED, "b": Availability.AVAILABLE}
    a_stats = next(s for s in rig.health.stats() if s.vendor == "a")
    assert (a_stats.state, a_stats.last_reason) == (HealthState.EJECTED, "vendor_config")


@pytest.mark.parametrize(
    "ambiguous_policy",
    [{}, {"otp": AmbiguousPolicy.ASSUME_SENT}, {"default": AmbiguousPolicy.RESEND}],
)
async def test_ambiguous_resends_by_default(
    store: SqliteStore, wall: FakeClock, ambiguous_policy: dict[str, AmbiguousPolicy]
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", ambiguous()), ScriptedVendor("b", accepted("esp-b"))],
        wall=wall,
        classes=ClassBook.build({}, {k: v.value for k, v in ambiguous_policy.items()}),
    )

    receipt = await rig.deliverer.submit(make_message(traffic_class="transactional"))

    assert (receipt.state, receipt.vendor) == (MessageState.SENT, "b")
    assert len(rig.vendor("a").calls) == len(rig.vendor("b").calls) == 1


@pytest.mark.parametrize(
    "ambiguous_policy",
    [{"otp": AmbiguousPolicy.ASSUME_SENT}, {"default": AmbiguousPolicy.ASSUME_SENT}],
)
async def test_ambiguous_assumed_sent_for_its_class(
    store: SqliteStore, wall: FakeClock, ambiguous_policy: dict[str, AmbiguousPolicy]
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", ambiguous()), ScriptedVendor("b", accepted())],
        wall=wall,
        classes=ClassBook.build({}, {k: v.value for k, v in ambiguous_policy.items()}),
    )

    receipt = await rig.deliverer.submit(make_message(traffic_class="otp"))

    assert (receipt.state, receipt.vendor, receipt.vendor_message_id) == (
        MessageState.SENT,
        "a",
        None,
    )
    assert rig.vendor("b").calls == []
    _, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, SENT]


async def test_nothing_accepts_spools_durably_with_the_body(
    store: SqliteStore, db: Path, wall: FakeClock
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", retriable()), ScriptedVendor("b", rate_limited(None))],
        wall=wall,
    )
    message = make_message(idempotency_key="k-1", deadline=T0 + 3600)

    receipt = await rig.deliverer.submit(message)

    assert receipt.state is MessageState.QUEUED
    assert store.commits >= 1  # "queued" is answered only after a commit
    record, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, ATTEMPT, SPOOLED]
    assert (record.attempts, record.vendor, record.idempotency_key) == (2, "b", "k-1")
    due = record.next_attempt_at
    assert due is not None and T0 <= due <= T0 + 2.0  # full jitter over 2 attempts' window

    async with opened_store(db, clock=wall) as other:  # as a restarted node would see it
        [leased] = await other.lease_due(now=due, owner="other", lease_seconds=60, limit=10)
        assert leased.record == record
        assert from_payload(leased.payload) == message


async def test_deadline_passing_between_attempts_expires(
    store: SqliteStore, wall: FakeClock
) -> None:
    slow = ScriptedVendor("a", retriable(), on_send=lambda _: wall.advance(31.0))
    rig = make_rig(
        store,
        [slow, ScriptedVendor("b", accepted()), ScriptedVendor("c", accepted())],
        wall=wall,
        policy=DeliveryPolicy(attempt_timeout=10.0),
    )

    receipt = await rig.deliverer.submit(make_message(deadline=T0 + 30.0))

    assert receipt.state is MessageState.EXPIRED
    assert receipt.reason is not None and "deadline" in receipt.reason
    assert rig.vendor("b").calls == [] and rig.vendor("c").calls == []
    record, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, EXPIRED]
    assert record.next_attempt_at is None


async def test_deadline_passing_during_the_last_attempt_expires(
    store: SqliteStore, wall: FakeClock
) -> None:
    last = ScriptedVendor("b", retriable(), on_send=lambda _: wall.advance(60.0))
    rig = make_rig(store, [ScriptedVendor("a", retriable()), last], wall=wall)

    receipt = await rig.deliverer.submit(make_message(deadline=T0 + 30.0))

    assert receipt.state is MessageState.EXPIRED  # not queued past its deadline
    _, events = await stored(store, receipt.id)
    assert events == [RECEIVED, ATTEMPT, ATTEMPT, EXPIRED]


async def test_attempt_timeout_is_bounded_by_the_deadline(
    store: SqliteStore, wall: FakeClock
) -> None:
    a = ScriptedVendor("a", retriable(), on_send=lambda _: wall.advance(20.0))
    b = ScriptedVendor("b", retriable(), on_send=lambda _: wall.advance(3.0))
    c = ScriptedVendor("c", accepted())
    rig = make_rig(store, [a, b, c], wall=wall, policy=DeliveryPolicy(attempt_timeout=10.0))

    receipt = await rig.deliverer.submit(make_message(deadline=T0 + 25.0))

    assert (receipt.state, receipt.vendor) == (MessageState.SENT, "c")
    assert [call.timeout for v in (a, b, c) for call in v.calls] == [10.0, 5.0, 2.0]


async def test_a_vendor_can_have_its_own_attempt_timeout(
    store: SqliteStore, wall: FakeClock
) -> None:
    a, b = ScriptedVendor("a", retriable()), ScriptedVendor("b", accepted())
    policy = DeliveryPolicy(attempt_timeout=10.0, vendor_timeouts={"a": 2.5})
    rig = make_rig(store, [a, b], wall=wall, policy=policy)

    await rig.deliverer.submit(make_message())

    assert [call.timeout for v in (a, b) for call in v.calls] == [2.5, 10.0]


async def test_ejected_vendor_is_skipped_until_every_vendor_is_ejected(
    store: SqliteStore, wall: FakeClock
) -> None:
    a = ScriptedVendor("a", vendor_config(), accepted("esp-a"))
    b = ScriptedVendor("b", accepted("esp-b"), accepted("esp-b"), vendor_config())
    rig = make_rig(store, [a, b], wall=wall)

    first = await rig.deliverer.submit(make_message())  # a ejects itself; b takes it
    second = await rig.deliverer.submit(make_message())  # a is skipped though it weighs most

    assert (first.vendor, second.vendor) == ("b", "b")
    assert len(a.calls) == 1
    assert rig.health.availability()["a"] is Availability.EJECTED

    third = await rig.deliverer.submit(make_message())  # b ejects itself: nothing left
    assert third.state is MessageState.QUEUED and len(a.calls) == 1
    assert set(rig.health.availability().values()) == {Availability.EJECTED}

    fourth = await rig.deliverer.submit(make_message())  # panic: tried anyway, by weight

    assert (fourth.state, fourth.vendor, fourth.vendor_message_id) == (
        MessageState.SENT,
        "a",
        "esp-a",
    )
    assert len(a.calls) == 2 and len(b.calls) == 3  # a took it: b not needed
    assert rig.health.availability()["a"] is Availability.AVAILABLE  # a panic success recovers


async def test_ejected_vendor_is_skipped_by_consecutive_failures(
    store: SqliteStore, wall: FakeClock
) -> None:
    a = ScriptedVendor("a", then=retriable())
    b = ScriptedVendor("b", then=accepted())
    rig = make_rig(store, [a, b], wall=wall, health_settings=HealthSettings(consecutive_failures=2))

    for _ in range(4):
        receipt = await rig.deliverer.submit(make_message())
        assert (receipt.state, receipt.vendor) == (MessageState.SENT, "b")

    assert len(a.calls) == 2 and len(b.calls) == 4


async def test_vendor_that_raises_counts_as_retriable(store: SqliteStore, wall: FakeClock) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", RuntimeError("boom")), ScriptedVendor("b", accepted("esp-b"))],
        wall=wall,
    )

    receipt = await rig.deliverer.submit(make_message())

    assert (receipt.state, receipt.vendor) == (MessageState.SENT, "b")
    found = await store.get(receipt.id)
    assert found is not None
    attempt_a = found[1][1]
    assert (attempt_a.vendor, attempt_a.detail["outcome"]) == ("a", Outcome.RETRIABLE.value)
    assert "boom" in attempt_a.detail["reason"]
    assert next(s for s in rig.health.stats() if s.vendor == "a").consecutive_failures == 1


async def test_every_vendor_raising_still_spools(store: SqliteStore, wall: FakeClock) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", RuntimeError("boom")), ScriptedVendor("b", ValueError("bad"))],
        wall=wall,
    )
    message = make_message()

    receipt = await rig.deliverer.submit(message)

    assert receipt.state is MessageState.QUEUED
    [leased] = await store.lease_due(now=T0 + 300, owner="w", lease_seconds=60, limit=10)
    assert leased.record.id == receipt.id and from_payload(leased.payload) == message


def unsupported(reason: str) -> AttemptResult:
    return AttemptResult(Outcome.UNSUPPORTED, reason=reason)


async def test_a_message_no_vendor_can_carry_fails_naming_each_reason_once(
    store: SqliteStore, wall: FakeClock
) -> None:
    tags = "11 tags; SendGrid takes at most 10 categories"
    rig = make_rig(
        store,
        [
            ScriptedVendor("primary", unsupported(tags)),
            ScriptedVendor("backup", unsupported(tags)),
            ScriptedVendor("relay", unsupported("tags: a plain SMTP relay has no place for them")),
        ],
        wall=wall,
    )

    receipt = await rig.deliverer.submit(make_message())

    assert receipt.state is MessageState.FAILED
    assert receipt.reason == (
        f"no vendor can carry this message: primary, backup: {tags}; "
        "relay: tags: a plain SMTP relay has no place for them"
    )


async def test_an_unsupported_vendor_is_skipped_for_the_next(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("primary", unsupported("raw MIME")), ScriptedVendor("b", accepted())],
        wall=wall,
    )

    receipt = await rig.deliverer.submit(make_message())

    assert (receipt.state, receipt.vendor) == (MessageState.SENT, "b")
    assert rig.health.availability()["primary"] is Availability.AVAILABLE
    primary = next(s for s in rig.health.stats() if s.vendor == "primary")
    assert primary.state is HealthState.HEALTHY


# --- redeliver ------------------------------------------------------------------------------


async def lease_one(rig: Rig, owner: str = "w") -> Leased:
    [leased] = await rig.store.lease_due(now=rig.wall(), owner=owner, lease_seconds=60, limit=10)
    return leased


async def test_redeliver_avoids_the_last_vendor_and_drops_the_body(
    store: SqliteStore, db: Path, wall: FakeClock
) -> None:
    order: list[str] = []
    a, b = order_log(order, "a"), order_log(order, "b")
    a.script.append(accepted("esp-a"))
    b.script.append(retriable())
    rig = make_rig(store, [a, b], wall=wall)  # a weighs most, but a was tried last
    await spool(store, "m1", make_message(), due=T0, vendor="a", attempts=1)
    wall.advance(5.0)

    state = await rig.deliverer.redeliver(await lease_one(rig), "w")

    assert state is MessageState.SENT
    assert order == ["b", "a"]
    record, events = await stored(store, "m1")
    assert events == [RECEIVED, ATTEMPT, ATTEMPT, SENT]
    assert (record.state, record.vendor, record.vendor_message_id) == (
        MessageState.SENT,
        "a",
        "esp-a",
    )
    assert (record.attempts, record.updated_at, record.next_attempt_at) == (3, T0 + 5.0, None)
    assert stored_payload(db, "m1") is None


async def test_every_attempt_and_retry_of_a_message_carries_its_id(
    store: SqliteStore, wall: FakeClock
) -> None:
    """Vendors derive their ESP's idempotency key from it: it must not change on a retry."""
    a = ScriptedVendor("a", retriable(), accepted())
    b = ScriptedVendor("b", ambiguous(), accepted())
    rig = make_rig(store, [a, b], wall=wall)

    first = await rig.deliverer.submit(make_message())
    wall.advance(3600.0)
    state = await rig.deliverer.redeliver(await lease_one(rig), "w")
    other = await rig.deliverer.submit(make_message())

    assert (first.state, state, other.state) == (
        MessageState.QUEUED,
        MessageState.SENT,
        MessageState.SENT,
    )
    # a: first's attempt, its retry, then other's; b: first's ambiguous attempt, then other's.
    assert [c.message_id for c in a.calls] == [first.id, first.id, other.id]
    assert [c.message_id for c in b.calls] == [first.id, other.id]
    assert other.id != first.id


async def test_redeliver_never_attempts_past_its_lease(store: SqliteStore, wall: FakeClock) -> None:
    """An attempt running past the lease could overlap the next lease of the same message."""
    a = ScriptedVendor("a", retriable(), on_send=lambda _: wall.advance(59.0))
    b = ScriptedVendor("b", accepted())
    rig = make_rig(store, [a, b], wall=wall, policy=DeliveryPolicy(attempt_timeout=10.0))
    await spool(store, "m1", make_message(), due=T0)
    leased = await lease_one(rig)  # 60 s lease

    state = await rig.deliverer.redeliver(leased, "w")

    assert state is MessageState.QUEUED  # b waits for the next retry
    assert b.calls == []
    assert [call.timeout for call in a.calls] == [10.0]
    record, _ = await stored(store, "m1")
    assert record.attempts == 1


async def test_redeliver_shortens_the_attempt_to_fit_the_lease(
    store: SqliteStore, wall: FakeClock
) -> None:
    a = ScriptedVendor("a", retriable(), on_send=lambda _: wall.advance(52.0))
    b = ScriptedVendor("b", accepted())
    rig = make_rig(store, [a, b], wall=wall, policy=DeliveryPolicy(attempt_timeout=10.0))
    await spool(store, "m1", make_message(), due=T0)

    state = await rig.deliverer.redeliver(await lease_one(rig), "w")

    assert state is MessageState.SENT
    assert [call.timeout for call in b.calls] == [7.0]  # 60 s lease - 52 s - 1 s margin


async def test_redeliver_tries_the_last_vendor_when_it_is_the_only_one_up(
    store: SqliteStore, wall: FakeClock
) -> None:
    a, b = ScriptedVendor("a", accepted()), ScriptedVendor("b", accepted("esp-b"))
    rig = make_rig(store, [a, b], wall=wall)
    rig.health.record("a", Admission.NORMAL, Outcome.VENDOR_CONFIG, 0.0)  # a is ejected
    await spool(store, "m1", make_message(), due=T0, vendor="b", attempts=1)

    state = await rig.deliverer.redeliver(await lease_one(rig), "w")

    assert state is MessageState.SENT
    assert a.calls == [] and len(b.calls) == 1


async def test_redeliver_reschedules_with_backoff_and_counts_attempts(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", retriable()), ScriptedVendor("b", retriable())],
        wall=wall,
        rng=FixedRandom(0.5),
        backoff=Backoff(base_delay=1.0, max_delay=300.0),
    )
    message = make_message()
    await spool(store, "m1", message, due=T0, vendor="a", attempts=2)
    wall.advance(100.0)

    state = await rig.deliverer.redeliver(await lease_one(rig), "w")

    assert state is MessageState.QUEUED
    record, events = await stored(store, "m1")
    assert events == [RECEIVED, ATTEMPT, ATTEMPT, RETRY_SCHEDULED]
    assert (record.attempts, record.vendor) == (4, "a")
    # 4 attempts: window min(300, 1 * 2**3) = 8 s, and the fixed draw takes half of it.
    assert record.next_attempt_at == T0 + 100.0 + 4.0
    # The lease is released and the body kept: the message is due again then.
    assert await store.lease_due(now=T0 + 103.9, owner="x", lease_seconds=60, limit=10) == []
    [again] = await store.lease_due(now=T0 + 104.0, owner="x", lease_seconds=60, limit=10)
    assert from_payload(again.payload) == message


@pytest.mark.parametrize(
    ("deadline", "elapsed"),
    [
        (T0 + 10.0, 10.0),  # the deadline itself
        (None, 3600.0),  # no deadline: created_at + max_age
    ],
)
async def test_redeliver_expires_without_calling_a_vendor(
    store: SqliteStore, db: Path, wall: FakeClock, deadline: float | None, elapsed: float
) -> None:
    a, b = ScriptedVendor("a", accepted()), ScriptedVendor("b", accepted())
    rig = make_rig(store, [a, b], wall=wall, policy=DeliveryPolicy(max_age=3600.0))
    await spool(store, "m1", make_message(deadline=deadline), due=T0, vendor="a", attempts=3)
    wall.advance(elapsed)

    state = await rig.deliverer.redeliver(await lease_one(rig), "w")

    assert state is MessageState.EXPIRED
    assert a.calls == [] and b.calls == []
    record, events = await stored(store, "m1")
    assert events == [RECEIVED, EXPIRED]
    assert record.state is MessageState.EXPIRED and record.attempts == 3
    assert record.reason is not None
    assert stored_payload(db, "m1") is None


async def test_redeliver_just_before_max_age_still_tries(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(
        store, [ScriptedVendor("a", accepted())], wall=wall, policy=DeliveryPolicy(max_age=3600.0)
    )
    await spool(store, "m1", make_message(), due=T0)
    wall.advance(3599.0)

    assert await rig.deliverer.redeliver(await lease_one(rig), "w") is MessageState.SENT


async def test_redeliver_permanent_fails(store: SqliteStore, db: Path, wall: FakeClock) -> None:
    a = ScriptedVendor("a", accepted())
    b = ScriptedVendor("b", permanent("unknown recipient"))
    rig = make_rig(store, [a, b], wall=wall)
    await spool(store, "m1", make_message(), due=T0, vendor="a", attempts=1)

    state = await rig.deliverer.redeliver(await lease_one(rig), "w")

    assert state is MessageState.FAILED
    assert a.calls == []  # a permanent outcome is about the message: no other vendor
    record, events = await stored(store, "m1")
    assert events == [RECEIVED, ATTEMPT, FAILED]
    assert (record.reason, record.attempts) == ("unknown recipient", 2)
    assert stored_payload(db, "m1") is None


async def test_redeliver_with_a_lost_lease_leaves_the_new_holder_alone(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", accepted())], wall=wall)
    await spool(store, "m1", make_message(), due=T0)
    stale = await lease_one(rig, owner="w1")
    wall.advance(61.0)  # w1's lease ran out and w2 took the message
    await lease_one(rig, owner="w2")

    state = await rig.deliverer.redeliver(stale, "w1")

    assert state is MessageState.QUEUED
    record, events = await stored(store, "m1")
    assert record.state is MessageState.QUEUED and events == [RECEIVED]


# --- attempts in doubt after a crash ---------------------------------------------------------


class Crash(BaseException):
    """The process dying mid-attempt: nothing after this point runs."""


def crash(_: object) -> None:
    raise Crash


async def crashed_mid_attempt(rig: Rig, vendor: str) -> Leased:
    """Spool m1, start a retry whose attempt at `vendor` never returns, restart, lease again."""
    await spool(rig.store, "m1", make_message(), due=T0, vendor="other")
    with pytest.raises(Crash):
        await rig.deliverer.redeliver(await lease_one(rig), "w")
    assert [c.message.subject for c in rig.vendor(vendor).calls] == ["Your code"]
    await rig.store.release_leases("w")  # the restarted node reclaims its leases
    return await lease_one(rig)


async def test_a_retry_notes_its_attempt_before_sending(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", on_send=crash)], wall=wall)

    leased = await crashed_mid_attempt(rig, "a")

    assert leased.in_doubt is not None and leased.in_doubt.vendor == "a"
    assert leased.in_doubt.started_at == T0


async def test_an_attempt_in_doubt_is_assumed_sent_under_assume_sent(
    store: SqliteStore, wall: FakeClock
) -> None:
    classes = ClassBook.build({}, {"default": "assume_sent"})
    a = ScriptedVendor("a", on_send=crash)
    rig = make_rig(store, [a], wall=wall, classes=classes)
    leased = await crashed_mid_attempt(rig, "a")
    a.on_send = None

    state = await rig.deliverer.redeliver(leased, "w")

    assert state is MessageState.SENT
    assert len(a.calls) == 1  # never sent again
    record, events = await stored(store, "m1")
    assert events == [RECEIVED, ATTEMPT, SENT]
    assert (record.vendor, record.vendor_message_id, record.attempts) == ("a", None, 1)
    found = await store.get("m1")
    assert found is not None
    doubt = found[1][1]
    assert (doubt.vendor, doubt.detail["outcome"], doubt.detail["in_doubt"]) == (
        "a",
        "ambiguous",
        True,
    )


async def test_an_attempt_in_doubt_is_sent_again_under_resend_and_says_so(
    store: SqliteStore, wall: FakeClock
) -> None:
    a = ScriptedVendor("a", on_send=crash)
    rig = make_rig(store, [a], wall=wall)  # resend is the default policy
    leased = await crashed_mid_attempt(rig, "a")
    a.on_send = None
    a.then = accepted("esp-2")

    state = await rig.deliverer.redeliver(leased, "w")

    assert state is MessageState.SENT
    assert len(a.calls) == 2
    found = await store.get("m1")
    assert found is not None
    record, events = found
    assert kinds(events) == [RECEIVED, ATTEMPT, ATTEMPT, SENT]
    assert events[1].detail["in_doubt"] is True and events[1].detail["outcome"] == "ambiguous"
    assert events[2].detail["outcome"] == "accepted" and "in_doubt" not in events[2].detail
    assert (record.vendor_message_id, record.attempts) == ("esp-2", 2)


async def test_a_settled_retry_leaves_nothing_in_doubt(store: SqliteStore, wall: FakeClock) -> None:
    rig = make_rig(store, [ScriptedVendor("a", retriable())], wall=wall)
    await spool(store, "m1", make_message(), due=T0)
    assert await rig.deliverer.redeliver(await lease_one(rig), "w") is MessageState.QUEUED
    wall.advance(600.0)

    leased = await lease_one(rig)

    assert leased.in_doubt is None


async def test_a_retry_that_cannot_note_its_attempt_sends_nothing(
    store: SqliteStore, wall: FakeClock
) -> None:
    a = ScriptedVendor("a", accepted())
    rig = make_rig(store, [a], wall=wall)
    await spool(store, "m1", make_message(), due=T0)
    stale = await lease_one(rig, owner="w1")
    wall.advance(61.0)  # w1's lease ran out and w2 took the message
    await lease_one(rig, owner="w2")

    assert await rig.deliverer.redeliver(stale, "w1") is MessageState.QUEUED

    assert a.calls == []


# --- never later than the deadline ----------------------------------------------------------


async def test_submit_schedules_no_later_than_the_deadline(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(store, [ScriptedVendor("a", rate_limited(60.0))], wall=wall)

    receipt = await rig.deliverer.submit(make_message(deadline=T0 + 20.0))

    record, _ = await stored(store, receipt.id)
    assert record.next_attempt_at == T0 + 20.0


async def test_redeliver_schedules_no_later_than_the_deadline(
    store: SqliteStore, wall: FakeClock
) -> None:
    rig = make_rig(
        store,
        [ScriptedVendor("a", rate_limited(60.0)), ScriptedVendor("b", retriable())],
        wall=wall,
    )
    await spool(store, "m1", make_message(deadline=T0 + 50.0), due=T0, vendor="a")
    wall.advance(40.0)

    assert await rig.deliverer.redeliver(await lease_one(rig), "w") is MessageState.QUEUED

    record, _ = await stored(store, "m1")
    assert record.next_attempt_at == T0 + 50.0
