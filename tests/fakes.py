"""Fakes shared by the Deliverer, Retrier, idempotency and API tests.

A scripted vendor, injectable clocks and random sources, and a `Rig` that wires
a real Deliverer to a real SqliteStore the way `mailmux.app` does, with every
clock and random draw under the test's control.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mailmux.backoff import Backoff
from mailmux.capacity import Capacity
from mailmux.classes import ClassBook
from mailmux.config_limits import RateLimit
from mailmux.delivery import Deliverer, DeliveryPolicy
from mailmux.health import Health, HealthSettings
from mailmux.message import Address, Message, to_payload
from mailmux.routing import RandomSource, Route
from mailmux.rules import Rules
from mailmux.spool.base import Event, EventKind, MessageRecord, MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.steering import Steering
from mailmux.vendors.base import AttemptResult, Outcome, Vendor
from mailmux.warmup import DailyUsage, WarmupSchedule

T0 = 1_700_000_000.0  # the fake wall clock's start (epoch seconds)
M0 = 5_000.0  # the fake monotonic clock's start


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FixedRandom:
    """A random source that always draws `value`, so back-off delays are exact."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def accepted(vendor_message_id: str = "esp-1") -> AttemptResult:
    return AttemptResult(Outcome.ACCEPTED, vendor_message_id=vendor_message_id, status=202)


def retriable(reason: str = "503 service unavailable") -> AttemptResult:
    return AttemptResult(Outcome.RETRIABLE, status=503, reason=reason)


def rate_limited(retry_after: float | None) -> AttemptResult:
    return AttemptResult(
        Outcome.RATE_LIMITED, status=429, reason="too many requests", retry_after=retry_after
    )


def permanent(reason: str = "recipient address rejected") -> AttemptResult:
    return AttemptResult(Outcome.PERMANENT, status=400, reason=reason)


def ambiguous() -> AttemptResult:
    return AttemptResult(Outcome.AMBIGUOUS, reason="no answer within 10s")


def vendor_config() -> AttemptResult:
    return AttemptResult(Outcome.VENDOR_CONFIG, status=401, reason="invalid API key")


Step = AttemptResult | Exception


@dataclass(frozen=True, slots=True)
class Call:
    """One `send` a ScriptedVendor saw."""

    message: Message
    timeout: float
    message_id: str


class ScriptedVendor(Vendor):
    """Answers each `send` with the next scripted step, then with `then` forever.

    A step that is an exception is raised, as a buggy vendor would. `on_send`
    runs inside `send` before it answers: tests use it to move a clock while
    an attempt is in flight, or to learn that an attempt started.
    """

    kind = "scripted"

    def __init__(
        self,
        name: str,
        *script: Step,
        then: Step | None = None,
        on_send: Callable[[Message], None] | None = None,
    ) -> None:
        super().__init__(name)
        self.script: deque[Step] = deque(script)
        self.then: Step = then if then is not None else retriable("script exhausted")
        self.on_send = on_send
        self.calls: list[Call] = []

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        self.calls.append(Call(message, timeout, message_id))
        if self.on_send is not None:
            self.on_send(message)
        step = self.script.popleft() if self.script else self.then
        if isinstance(step, Exception):
            raise step
        return step


def make_message(**fields: Any) -> Message:
    """A small valid message; keyword arguments replace its fields."""
    base = Message(
        sender=Address("app@example.com", "App"),
        to=(Address("user@example.net"),),
        subject="Your code",
        text="123456",
    )
    return replace(base, **fields)


@asynccontextmanager
async def opened_store(
    path: Path, *, clock: Callable[[], float], retention: float = 86400.0
) -> AsyncIterator[SqliteStore]:
    """A SqliteStore on `path`, open for the block and closed after it."""
    store = SqliteStore(str(path), idempotency_retention=retention, clock=clock)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@dataclass
class Rig:
    """A Deliverer over scripted vendors and a real store, with fake clocks."""

    store: SqliteStore
    vendors: dict[str, Vendor]
    routes: tuple[Route, ...]
    wall: FakeClock
    monotonic: FakeClock
    health: Health
    deliverer: Deliverer
    policy: DeliveryPolicy
    backoff: Backoff
    rng: RandomSource

    def vendor(self, name: str) -> ScriptedVendor:
        vendor = self.vendors[name]
        if not isinstance(vendor, ScriptedVendor):
            raise TypeError(f"{name} is not scripted")
        return vendor


def make_rig(
    store: SqliteStore,
    vendors: Iterable[Vendor],
    *,
    wall: FakeClock,
    weights: Mapping[str, float] | None = None,
    policy: DeliveryPolicy | None = None,
    backoff: Backoff | None = None,
    rng: RandomSource | None = None,
    health_settings: HealthSettings | None = None,
    deliverer_type: type[Deliverer] = Deliverer,
    classes: ClassBook | None = None,
    limits: Mapping[str, RateLimit] | None = None,
    schedules: Mapping[str, WarmupSchedule] | None = None,
) -> Rig:
    """Wire vendors in the given order; the first has weight 1 and the rest are
    weight-0 fallbacks unless `weights` says otherwise, so plans are predictable.
    `limits` and `schedules` count on a DailyUsage read with the rig's clocks."""
    by_name = {v.name: v for v in vendors}
    names = list(by_name)
    weights = weights or {name: 1.0 if i == 0 else 0.0 for i, name in enumerate(names)}
    routes = tuple(Route(name, weights[name]) for name in names)
    monotonic = FakeClock(M0)
    health = Health(names, health_settings or HealthSettings(), clock=monotonic)
    policy = policy or DeliveryPolicy()
    backoff = backoff or Backoff(base_delay=1.0, max_delay=300.0)
    rng = rng or random.Random(7)
    deliverer = deliverer_type(
        vendors=by_name,
        routes=routes,
        health=health,
        store=store,
        policy=policy,
        backoff=backoff,
        rng=rng,
        wall_clock=wall,
        monotonic=monotonic,
        steering=None if classes is None else Steering(classes, Rules.of(()), routes),
        capacity=Capacity(
            limits or {}, schedules or {}, DailyUsage(wall), clock=monotonic, wall=wall
        ),
    )
    return Rig(store, by_name, routes, wall, monotonic, health, deliverer, policy, backoff, rng)


async def spool(
    store: SqliteStore,
    message_id: str,
    message: Message,
    *,
    due: float,
    created_at: float = T0,
    vendor: str | None = None,
    attempts: int = 0,
    priority: int = 0,
) -> MessageRecord:
    """Put `message` in the spool as if an earlier round had queued it."""
    record = MessageRecord(
        id=message_id,
        state=MessageState.QUEUED,
        created_at=created_at,
        updated_at=created_at,
        traffic_class=message.traffic_class,
        deadline=message.deadline,
        idempotency_key=message.idempotency_key,
        vendor=vendor,
        attempts=attempts,
        next_attempt_at=due,
        priority=priority,
    )
    events = [Event(message_id, created_at, EventKind.RECEIVED)]
    await store.insert(record, events, payload=to_payload(message), durable=True)
    return record


def kinds(events: Iterable[Event]) -> list[EventKind]:
    return [e.kind for e in events]
