"""The Deliverer: one message, the plan's vendors in order, until one takes it.

It is the only place that turns outcomes into state. It keeps the promise:
a message is answered "accepted" only once a vendor accepted it or the
spool holds it durably; everything else is reported to the caller. The same
loop serves the first attempt (`submit`) and every retry from the spool
(`redeliver`), so both follow one set of rules.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple, TypeVar

from mailmux.backoff import Backoff
from mailmux.capacity import Capacity
from mailmux.classes import AmbiguousPolicy as AmbiguousPolicy  # its home before classes.py
from mailmux.classes import TrafficClass, effective_deadline
from mailmux.health import Admission, Ejected, Health, HealthEvent, ProbeAdmitted, Recovered
from mailmux.message import Message, from_payload, to_payload
from mailmux.metrics import NO_METRICS, Recorder
from mailmux.notices import Notice, NoticeBoard, NoticeKind
from mailmux.pool_share import PoolShare
from mailmux.receipts import Receipt, new_message_id
from mailmux.routing import RandomSource, Route, plan
from mailmux.spool.base import (
    Event,
    EventKind,
    InDoubt,
    Leased,
    LeaseLost,
    MessageRecord,
    MessageState,
    Store,
)
from mailmux.steering import Steer, Steering
from mailmux.traffic import TrafficHistory
from mailmux.vendors.base import COUNTS_AGAINST_HEALTH, AttemptResult, Outcome, Vendor

log = logging.getLogger("mailmux.delivery")
_T = TypeVar("_T")


#: The hedge delay of a `p90` class while its first vendor has no recent latency to go by.
HEDGE_WITHOUT_P90 = 1.0

#: Seconds kept free at the end of a lease to write the result before the lease runs out.
LEASE_MARGIN = 1.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    attempt_timeout: float = 10.0
    vendor_timeouts: Mapping[str, float] = field(default_factory=dict)  # per-vendor overrides
    max_age: float = 72 * 3600.0  # a queued message without a deadline expires after this


class _Verdict(NamedTuple):
    """A message's state after a round, with what the record needs to say about it."""

    state: MessageState
    reason: str | None = None
    vendor_message_id: str | None = None


@dataclass(slots=True)
class _Round:
    """What trying one plan produced."""

    decided: AttemptResult | None = None  # accepted, permanent, or ambiguous taken as sent
    vendor: str | None = None  # vendor of `decided`, else the last vendor tried
    attempts: int = 0
    retry_after: float | None = None
    deadline_passed: bool = False
    unsupported: list[tuple[str, str]] = field(default_factory=list)  # (vendor, why it can't)
    carriable: bool = False  # some vendor in the plan was skipped or answered otherwise
    waiting: list[str] = field(default_factory=list)  # left out at a limit, quota or cap now
    over_cap: tuple[str, ...] = ()  # planned past their warm-up cap: their attempts say so
    events: list[Event] = field(default_factory=list)


class Deliverer:
    """Tries vendors for one message and records every step."""

    def __init__(
        self,
        *,
        vendors: Mapping[str, Vendor],
        routes: Sequence[Route],
        health: Health,
        store: Store,
        policy: DeliveryPolicy,
        backoff: Backoff,
        rng: RandomSource | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Recorder = NO_METRICS,
        notices: NoticeBoard | None = None,
        traffic: TrafficHistory | None = None,
        steering: Steering | None = None,
        capacity: Capacity | None = None,
        on_spooled: Callable[[float], None] | None = None,
        on_recovered: Callable[[str], None] | None = None,
    ) -> None:
        self.vendors = vendors
        #: The config's routes with the overrides in force, as status and metrics show them.
        self.routes = tuple(routes)
        #: Each message's class and routes (classes, rules, overrides); the App replaces it.
        self.steering = steering if steering is not None else Steering.plain(routes)
        self.health = health
        #: Rate limits, quotas and warm-up schedules; the App reconciles it on a reload.
        self.capacity = capacity if capacity is not None else Capacity.unlimited()
        #: Told the due time of each message spooled, so the Retrier can look in time.
        self.on_spooled = on_spooled
        #: Told each vendor that recovers, so the spool's backlog can go to it at once.
        self.on_recovered = on_recovered
        self.store = store
        self.policy = policy
        self.backoff = backoff
        self.rng: RandomSource = rng or random.Random()
        self._wall = wall_clock
        self._monotonic = monotonic
        self.metrics = metrics
        self.notices = notices if notices is not None else NoticeBoard()
        #: Losing attempts of hedges, still under way after their message was answered.
        self._losers: set[asyncio.Future[None]] = set()
        #: Accepted attempts per vendor per second, for the dashboard's chart.
        self.traffic = traffic if traffic is not None else TrafficHistory(vendors, clock=wall_clock)
        #: Each vendor's latest failure in its own words, for `mailmux status`.
        self.last_errors: dict[str, str] = {}

    async def submit(self, message: Message, *, request_hash: str | None = None) -> Receipt:
        """First delivery: answer with where the message is now (never 'accepted' unsafely).

        `request_hash` identifies the request that carried the message's
        idempotency key; it is stored with the key for replays to be checked.
        """
        message_id = new_message_id()
        now = self._wall()
        steer = self.steering.steer(message)
        cls = steer.traffic_class
        detail = _received_detail(message, steer)
        deadline = effective_deadline(cls, message.deadline, now)
        if cls.name != message.traffic_class or deadline != message.deadline:
            # Kept with the message: its retries are steered by the class it was given here.
            message = replace(message, traffic_class=cls.name, deadline=deadline)
        received = Event(message_id, now, EventKind.RECEIVED, None, detail)
        result = await self._try_plan(message_id, message, steer, avoid=None, expiry=deadline)
        events = [received, *result.events]
        verdict = self._conclude(message_id, result, events, cls, result.attempts)
        next_at = None
        if verdict is None:
            next_at = self._schedule(
                message_id, result.attempts, message.deadline, result, events, EventKind.SPOOLED
            )
            verdict = _Verdict(MessageState.QUEUED)
        record = MessageRecord(
            id=message_id,
            state=verdict.state,
            created_at=now,
            updated_at=self._wall(),
            traffic_class=message.traffic_class,
            deadline=message.deadline,
            idempotency_key=message.idempotency_key,
            vendor=result.vendor,
            vendor_message_id=verdict.vendor_message_id,
            reason=verdict.reason,
            attempts=result.attempts,
            next_attempt_at=next_at,
            request_hash=request_hash,
            answered=verdict.state,
            priority=cls.priority,
        )
        if next_at is None:
            await self.store.insert(record, events, durable=False)
        else:
            await self.store.insert(record, events, payload=to_payload(message), durable=True)
            if self.on_spooled is not None:
                _tell(self.on_spooled, next_at)  # the message is spooled: never unsaid
        self.metrics.message(verdict.state, message.traffic_class)
        decided = result.decided
        return Receipt.from_record(record, None if decided is None else decided.passed_through)

    async def redeliver(self, leased: Leased, owner: str) -> MessageState:
        """One retry of a spooled message this node holds the lease on.

        Before each attempt the store durably notes it (`begin_attempt`), so
        that if this node dies before the outcome is written, the next retry
        finds the attempt in doubt and treats it as ambiguous: the traffic
        class's ambiguous policy decides between assuming it sent and sending
        again (which then says so in the message's events).
        """
        record = leased.record
        message = from_payload(leased.payload)
        steer = self.steering.steer(message)
        expiry = record.deadline
        if expiry is None:
            expiry = record.created_at + self.policy.max_age
        doubt = leased.in_doubt
        doubted = [] if doubt is None else [_in_doubt_event(record.id, self._wall(), doubt)]
        avoid = record.vendor
        if doubt is not None:
            avoid = None  # the same vendor may drop the duplicate by its idempotency key

        async def note(vendor: str) -> None:
            await self.store.begin_attempt(record.id, owner=owner, vendor=vendor, at=self._wall())

        if doubt is not None and steer.traffic_class.ambiguous is AmbiguousPolicy.ASSUME_SENT:
            ambiguous = AttemptResult(Outcome.AMBIGUOUS, reason=_IN_DOUBT)
            result = _Round(decided=ambiguous, vendor=doubt.vendor)
        elif self._wall() >= expiry:
            result = _Round(deadline_passed=True, vendor=record.vendor)
        else:
            try:
                result = await self._try_plan(
                    record.id,
                    message,
                    steer,
                    avoid=avoid,
                    made=record.attempts + len(doubted),
                    expiry=expiry,
                    stop_by=leased.lease_until - LEASE_MARGIN,
                    before_send=note,
                )
            except LeaseLost:
                log.warning("lease on %s lost while retrying it; another worker has it", record.id)
                return record.state
        events = [*doubted, *result.events]
        attempts = record.attempts + result.attempts + len(doubted)
        verdict = self._conclude(record.id, result, events, steer.traffic_class, attempts)
        next_at = None
        if verdict is None:
            next_at = self._schedule(
                record.id, attempts, record.deadline, result, events, EventKind.RETRY_SCHEDULED
            )
            verdict = _Verdict(MessageState.QUEUED)
        final = replace(
            record,
            state=verdict.state,
            updated_at=self._wall(),
            vendor=result.vendor or record.vendor,
            vendor_message_id=verdict.vendor_message_id,
            reason=verdict.reason,
            attempts=attempts,
            next_attempt_at=next_at,
        )
        try:
            await self.store.update(final, events, owner=owner)
        except LeaseLost:
            log.warning("lease on %s lost while retrying it; another worker has it", record.id)
            return record.state
        if final.state is not record.state:
            self.metrics.message(final.state, record.traffic_class)
        return final.state

    def _conclude(
        self,
        message_id: str,
        result: _Round,
        events: list[Event],
        cls: TrafficClass,
        attempts: int,
    ) -> _Verdict | None:
        """The terminal state this round led to (its event appended), or None: it must wait."""
        now = self._wall()
        decided = result.decided
        if decided is not None and decided.outcome is Outcome.PERMANENT:
            failed = {"reason": decided.reason}
            events.append(Event(message_id, now, EventKind.FAILED, result.vendor, failed))
            return _Verdict(MessageState.FAILED, reason=decided.reason)
        if decided is not None:
            sent = {"vendor_message_id": decided.vendor_message_id}
            events.append(Event(message_id, now, EventKind.SENT, result.vendor, sent))
            return _Verdict(MessageState.SENT, vendor_message_id=decided.vendor_message_id)
        if result.unsupported and not result.carriable:
            reason = "no vendor can carry this message: " + _grouped(result.unsupported)
            events.append(Event(message_id, now, EventKind.FAILED, None, {"reason": reason}))
            return _Verdict(MessageState.FAILED, reason=reason)
        if result.deadline_passed:
            reason = "deadline passed before any vendor accepted the message"
            events.append(Event(message_id, now, EventKind.EXPIRED, None, {"reason": reason}))
            return _Verdict(MessageState.EXPIRED, reason=reason)
        if cls.max_attempts is not None and attempts >= cls.max_attempts:
            reason = f"gave up after {attempts} attempts, the most class {cls.name} allows"
            events.append(Event(message_id, now, EventKind.FAILED, None, {"reason": reason}))
            return _Verdict(MessageState.FAILED, reason=reason)
        return None

    def _schedule(
        self,
        message_id: str,
        attempts: int,
        deadline: float | None,
        result: _Round,
        events: list[Event],
        kind: EventKind,
    ) -> float:
        """When to retry (never later than the deadline); appends the `kind` event.

        A round that asked no vendor because those it could use were at their
        limits waits only until one of them can take a message, not a back-off.
        """
        now = self._wall()
        delay = self.backoff.delay(max(attempts, 1), self.rng, result.retry_after)
        if result.waiting and not result.attempts:
            delay = min(delay, self.capacity.wait_time(result.waiting, urgent=False))
        next_at = now + delay
        if deadline is not None:
            next_at = min(next_at, deadline)
        events.append(Event(message_id, now, kind, None, {"next_attempt_at": next_at}))
        return next_at

    async def _try_plan(
        self,
        message_id: str,
        message: Message,
        steer: Steer,
        *,
        avoid: str | None,
        expiry: float | None,
        made: int = 0,
        stop_by: float | None = None,
        before_send: Callable[[str], Awaitable[None]] | None = None,
    ) -> _Round:
        """Try the planned vendors in order until one decides the message's fate.

        `steer` is the message's class and routes. `expiry` is the message's
        deadline: passing it expires the message. `made` attempts were made in
        earlier rounds (the class's `max_attempts` counts them all).
        `stop_by` is the end of this node's lease on it: no attempt may run past
        it, or the Retrier (here or on another node) could lease and send the
        message again while this attempt is still going; the rest of the plan
        waits for the next retry. `before_send(vendor)` runs before each
        request goes out; if it raises, nothing more is sent.

        Capacity: vendors at a rate limit, quota or ESP-told wait are left out
        of the plan (`waiting`), and vendors past today's warm-up cap go last.
        Each attempt takes its unit of capacity before anything is awaited, so
        a caller that checked `Capacity.wait_time` and then started this
        round sees the unit gone on its next check (the Retrier paces so).
        Urgent capacity (the limiter's reserve) is for first attempts of any
        class above the least urgent one: a retried backlog never takes it.
        """
        result = _Round()
        # One reading of what a reload may swap: the round finishes on what it started with.
        vendors, policy, capacity = self.vendors, self.policy, self.capacity
        routes = capacity.warm(steer.routes)
        cls = steer.traffic_class
        urgent = before_send is None and cls.priority > self.steering.book.lowest_priority
        chosen = plan(
            message,
            routes,
            self.health.availability(),
            self.rng,
            avoid=avoid,
            full=capacity.full(urgent=urgent),
            capped=capacity.capped(),
        )
        result.waiting = list(chosen.waiting)
        result.over_cap = chosen.over_cap
        if chosen.panic:
            log.warning(
                "every vendor is ejected: routing %s by weight anyway (panic)",
                message_id,
                extra={"message_id": message_id, "event": "panic"},
            )
        # A vendor left out of the plan (ejected, drained) might carry what the others can't.
        result.carriable = len(chosen.vendors) < len(routes)
        # Hedging (first attempts only: a retry notes each attempt before it goes out, and
        # one note cannot cover two requests at once): once the first attempt has run for
        # the hedge delay, the next vendor is asked alongside; the first acceptance wins.
        hedge = None if before_send is not None else cls.hedge_after
        budget = None if cls.max_attempts is None else cls.max_attempts - made
        running: tuple[str, asyncio.Task[tuple[AttemptResult, float]]] | None = None
        for name in chosen.vendors:
            now = self._wall()
            if expiry is not None and now >= expiry:
                result.deadline_passed = True
                break
            if budget is not None and result.attempts + (running is not None) >= budget:
                break  # the class allows no more attempts
            vendor = vendors[name]
            exclusive = _exclusive_to_other(message, vendor)
            if exclusive is not None:  # not an attempt: nothing is asked of the vendor
                result.unsupported.append((name, exclusive))
                continue
            if not capacity.take(name, urgent=urgent, over_cap=name in chosen.over_cap):
                result.carriable = True  # at its limit since the plan was made: later
                result.waiting.append(name)
                continue
            admission = Admission.PANIC if chosen.panic else self.health.admit(name)
            if admission is None:
                capacity.give_back(name)
                result.carriable = True  # skipped, not asked: it might carry it later
                continue
            timeout = policy.vendor_timeouts.get(name, policy.attempt_timeout)
            if cls.attempt_timeout is not None:
                timeout = min(timeout, cls.attempt_timeout)
            # What can wait holds only its share of the vendor's connections, so an urgent
            # first attempt never queues behind it; waiting for a place is part of the attempt.
            share = None if urgent else vendor.share
            if share is not None:
                try:
                    held = await share.hold(_bounded(timeout, now, expiry, stop_by))
                except BaseException:  # cancelled while waiting: nothing was held
                    capacity.give_back(name)
                    raise
                if not held:
                    capacity.give_back(name)
                    self.health.skip(name, admission)
                    result.carriable = True  # its share is busy, not the vendor failing: later
                    continue
            if before_send is not None:
                try:
                    await before_send(name)
                except BaseException:
                    capacity.give_back(name)
                    if share is not None:
                        share.release()
                    raise
            if share is not None or before_send is not None:
                now = self._wall()  # time may have passed while waiting
            if stop_by is not None and now >= stop_by:
                capacity.give_back(name)
                self.health.skip(name, admission)
                if share is not None:
                    share.release()
                result.carriable = True  # not asked: the next retry will
                break
            timeout = _bounded(timeout, now, expiry, stop_by)
            call = self._attempt(name, vendor, admission, message_id, message, timeout, share)
            if running is not None:  # the hedge: both run, the first acceptance decides
                second = (name, asyncio.ensure_future(call))
                if await self._race(result, running, second, message_id, message, cls):
                    return result
                running = None
                continue
            if hedge is not None and name != chosen.vendors[-1]:
                task = asyncio.ensure_future(call)
                done, _ = await asyncio.wait({task}, timeout=self._hedge_delay(hedge, name))
                if not done:
                    running = (name, task)
                    continue
                attempt, latency = task.result()
            else:
                attempt, latency = await call
            if self._took(result, name, attempt, latency, message_id, message, cls):
                return result
        if running is not None:  # no second vendor could be asked: wait for the first
            attempt, latency = await running[1]
            if self._took(result, running[0], attempt, latency, message_id, message, cls):
                return result
        if expiry is not None and self._wall() >= expiry:
            result.deadline_passed = True
        return result

    def _took(
        self,
        result: _Round,
        name: str,
        attempt: AttemptResult,
        latency: float,
        message_id: str,
        message: Message,
        cls: TrafficClass,
    ) -> bool:
        """Add one attempt to the round; whether it decided the message's fate."""
        result.attempts += 1
        result.vendor = name
        event = _attempt_event(message_id, self._wall(), name, attempt, latency, message)
        if name in result.over_cap:
            # Recorded: the warm-up cap was exceeded because no other vendor could take it.
            event = replace(event, detail={**event.detail, "over_cap": True})
        result.events.append(event)
        if attempt.outcome is Outcome.UNSUPPORTED:
            result.unsupported.append((name, attempt.reason))
            return False
        result.carriable = True
        if attempt.outcome in (Outcome.ACCEPTED, Outcome.PERMANENT):
            result.decided = attempt
            return True
        if attempt.outcome is Outcome.AMBIGUOUS and cls.ambiguous is AmbiguousPolicy.ASSUME_SENT:
            result.decided = attempt
            return True
        if attempt.retry_after is not None:
            result.retry_after = max(result.retry_after or 0.0, attempt.retry_after)
        return False

    async def _race(
        self,
        result: _Round,
        first: tuple[str, asyncio.Task[tuple[AttemptResult, float]]],
        second: tuple[str, asyncio.Task[tuple[AttemptResult, float]]],
        message_id: str,
        message: Message,
        cls: TrafficClass,
    ) -> bool:
        """Two attempts under way: take outcomes as they come until one decides.

        The other attempt is not cancelled (its request is already out and
        may be taken anyway): it finishes on its own and its outcome is
        recorded as the hedge's loser, after the caller has been answered.
        """
        names = {first[1]: first[0], second[1]: second[0]}
        waiting = set(names)
        raced: list[int] = []  # where the racers' attempt events are in the round
        while waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                attempt, latency = task.result()
                decided = self._took(
                    result, names[task], attempt, latency, message_id, message, cls
                )
                raced.append(len(result.events) - 1)
                if decided:
                    for index in raced:
                        won = index == raced[-1]
                        result.events[index] = _hedged(result.events[index], won=won)
                    for loser in waiting | (done - {task}):
                        self._record_loser(message_id, names[loser], loser, message)
                    return True
        return False

    def _hedge_delay(self, hedge: float | str, vendor: str) -> float:
        """Seconds before the hedge goes out: fixed, or the vendor's recent p90 latency."""
        if isinstance(hedge, float | int):
            return float(hedge)
        p90 = self.health.recent_p90(vendor)
        return HEDGE_WITHOUT_P90 if p90 is None else p90

    def _record_loser(
        self,
        message_id: str,
        name: str,
        task: asyncio.Task[tuple[AttemptResult, float]],
        message: Message,
    ) -> None:
        """When the losing attempt of a hedge ends, add its outcome to the message's events."""

        async def record() -> None:
            attempt, latency = await task
            event = _attempt_event(message_id, self._wall(), name, attempt, latency, message)
            await self.store.append_events([_hedged(event, won=False)])

        loser = asyncio.ensure_future(record())
        self._losers.add(loser)
        loser.add_done_callback(self._losers.discard)

    async def settle(self) -> None:
        """Wait for the losing attempts of hedges still under way (each is bounded by its
        timeout), so their outcomes are recorded before the store closes."""
        while self._losers:
            await asyncio.gather(*list(self._losers), return_exceptions=True)

    async def _attempt(
        self,
        name: str,
        vendor: Vendor,
        admission: Admission,
        message_id: str,
        message: Message,
        timeout: float,
        share: PoolShare | None = None,
    ) -> tuple[AttemptResult, float]:
        """Send once and record the outcome; `share`'s place, if one was held, is given back."""
        started = self._monotonic()
        try:
            attempt = await vendor.send(message, timeout, message_id)
        except Exception as err:  # a vendor bug must not lose the message: treat as not sent
            log.exception(
                "vendor %s raised instead of returning an outcome", name, extra={"vendor": name}
            )
            attempt = AttemptResult(Outcome.RETRIABLE, reason=f"internal error: {err!r}")
        finally:
            if share is not None:
                share.release()
        latency = self._monotonic() - started
        self.capacity.settle(name, attempt.outcome, attempt.retry_after)
        if attempt.outcome is Outcome.RATE_LIMITED and attempt.retry_after is not None:
            self.health.skip(name, admission)  # the limiter skips it until then instead
        else:
            self.health.record(name, admission, attempt.outcome, latency)
        self.metrics.attempt(name, attempt.outcome, latency)
        if attempt.outcome is Outcome.ACCEPTED:
            self.traffic.sent(name)
        if log.isEnabledFor(logging.DEBUG):  # one line per attempt, formatted only when on
            log.debug(
                "attempt %s via %s: %s",
                message_id,
                name,
                attempt.outcome.value,
                extra={
                    "message_id": message_id,
                    "vendor": name,
                    "outcome": attempt.outcome.value,
                    "latency_ms": round(latency * 1000, 3),
                },
            )
        for event in self.health.take_events():
            reason = None
            if isinstance(event, Ejected):
                self.metrics.ejection(event.vendor, event.reason)
                reason = event.reason.value
            fields = {"vendor": event.vendor, "event": type(event).__name__, "reason": reason}
            log.warning("health: %s", event, extra=fields)
            self.notices.publish(_health_notice(event, self._wall(), self._monotonic()))
            if isinstance(event, Recovered) and self.on_recovered is not None:
                _tell(self.on_recovered, event.vendor)
        if attempt.outcome in COUNTS_AGAINST_HEALTH:
            self.last_errors[name] = f"{attempt.outcome.value}: {attempt.reason}"
        if attempt.outcome is Outcome.VENDOR_CONFIG:
            log.error(
                "vendor %s cannot send (check its configuration): %s",
                name,
                attempt.reason,
                extra={"vendor": name, "outcome": attempt.outcome.value},
            )
        return attempt, latency


def _bounded(timeout: float, now: float, expiry: float | None, stop_by: float | None) -> float:
    """`timeout`, cut so that it ends by the message's deadline and this node's lease."""
    if expiry is not None:
        timeout = min(timeout, expiry - now)
    if stop_by is not None:
        timeout = min(timeout, stop_by - now)
    return timeout


def _health_notice(event: HealthEvent, wall: float, monotonic: float) -> Notice:
    """The notice for a Health transition (Health's clock is monotonic, a notice's is wall)."""
    name = event.vendor
    if isinstance(event, Ejected):
        seconds = max(0.0, event.until - monotonic)
        return Notice(
            wall,
            NoticeKind.EJECTED,
            f"{name} ejected ({event.reason.value}): {event.detail}; probe in {seconds:.0f}s",
            name,
            {
                "reason": event.reason.value,
                "ejections": event.ejections,
                "probe_at": wall + seconds,
                "detail": event.detail,
            },
        )
    if isinstance(event, ProbeAdmitted):
        return Notice(wall, NoticeKind.PROBE, f"{name}: half-open probe let through", name)
    return Notice(wall, NoticeKind.RECOVERED, f"{name} recovered: traffic fails back", name)


def _tell(hook: Callable[[_T], None], value: _T) -> None:
    """Run a hook whose failure must not change a message's fate: it is logged, no more."""
    try:
        hook(value)
    except Exception:
        log.exception("a delivery hook failed; the message's state is unchanged")


def _grouped(reasons: Sequence[tuple[str, str]]) -> str:
    """`a, b: why; c: why not`: each reason once, with the vendors that gave it."""
    vendors_by_reason: dict[str, list[str]] = {}
    for vendor, reason in reasons:
        vendors_by_reason.setdefault(reason, []).append(vendor)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in vendors_by_reason.items())


_IN_DOUBT = "in doubt: mailmux stopped during this attempt, before its outcome was recorded"


def _in_doubt_event(message_id: str, at: float, doubt: InDoubt) -> Event:
    """The attempt a stopped node left unfinished, as the ambiguous attempt it was."""
    detail = {
        "outcome": Outcome.AMBIGUOUS.value,
        "reason": _IN_DOUBT,
        "in_doubt": True,
        "started_at": doubt.started_at,
    }
    return Event(message_id, at, EventKind.ATTEMPT, doubt.vendor, detail)


def _exclusive_to_other(message: Message, vendor: Vendor) -> str | None:
    """Why `vendor` may not carry a message that uses fields only its own ESP has, or None."""
    original = message.original
    if original is None or not original.exclusive or vendor.kind == original.shape:
        return None
    return f"uses {', '.join(original.exclusive)}, which only {original.shape} can carry"


def _hedged(event: Event, *, won: bool) -> Event:
    """An attempt of a hedge's race, marked as the one that decided or the other."""
    return replace(event, detail={**event.detail, "hedge": "won" if won else "lost"})


def _received_detail(message: Message, steer: Steer) -> dict[str, object]:
    detail: dict[str, object] = {"class": steer.traffic_class.name}
    if steer.traffic_class.name != message.traffic_class:
        detail["requested_class"] = message.traffic_class
    for said, rule in (("class_rule", steer.class_rule), ("route_rule", steer.rule)):
        if rule is not None:
            detail[said] = rule.index
    if message.original is not None:
        detail["ingress"] = message.original.shape
    if message.client is not None:
        detail["client"] = message.client
    return detail


def _attempt_event(
    message_id: str,
    at: float,
    vendor: str,
    attempt: AttemptResult,
    latency: float,
    message: Message,
) -> Event:
    detail: dict[str, object] = {
        "outcome": attempt.outcome.value,
        "latency_ms": round(latency * 1000, 3),
    }
    if message.original is not None and attempt.outcome is not Outcome.UNSUPPORTED:
        # Said for every vendor-shaped message: was the caller's request sent as it came?
        detail["mode"] = "passed_through" if attempt.passed_through else "translated"
    if attempt.status is not None:
        detail["status"] = attempt.status
    if attempt.reason:
        detail["reason"] = attempt.reason
    if attempt.retry_after is not None:
        detail["retry_after"] = attempt.retry_after
    if attempt.vendor_message_id is not None:
        detail["vendor_message_id"] = attempt.vendor_message_id
    return Event(message_id, at, EventKind.ATTEMPT, vendor, detail)
