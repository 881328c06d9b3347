"""Capacity: limits, caps and min shares over one day's usage, with fake clocks."""

from __future__ import annotations

from fakes import T0, FakeClock

from mailmux.capacity import SHARES_EVERY, Capacity
from mailmux.config_limits import RateLimit
from mailmux.routing import Route
from mailmux.vendors.base import Outcome
from mailmux.warmup import DailyUsage, WarmupSchedule, utc_day

ROUTES = (Route("a", 99.0), Route("b", 1.0))


def capacity(**schedules: WarmupSchedule) -> tuple[Capacity, FakeClock, DailyUsage]:
    clock, wall = FakeClock(100.0), FakeClock(T0)
    usage = DailyUsage(wall)
    limits = {"a": RateLimit(per_second=1.0)}
    return Capacity(limits, schedules, usage, clock=clock, wall=wall), clock, usage


def test_a_vendor_below_its_min_share_is_raised_and_kept_for_a_second() -> None:
    cap, clock, usage = capacity(b=WarmupSchedule(min_share=0.5))

    raised = cap.warm(ROUTES)

    assert raised == (Route("a", 99.0), Route("b", 99.0))  # half of the first picks
    for _ in range(3):
        assert usage.reserve("b", None)
        usage.settle("b", sent=True)
    assert cap.warm(ROUTES) is raised  # within SHARES_EVERY: not worked out again
    clock.advance(SHARES_EVERY)
    assert cap.warm(ROUTES) == ROUTES  # b has all of today's messages: above its share


def test_without_schedules_the_routes_pass_through_and_nothing_is_capped() -> None:
    cap, _, _ = capacity()

    assert cap.warm(ROUTES) is ROUTES
    assert cap.capped() == frozenset()


def test_capped_follows_the_utc_day() -> None:
    wall = FakeClock(T0)
    usage = DailyUsage(wall)
    cap = Capacity({}, {"b": WarmupSchedule(start=utc_day(T0), caps=(1, 2))}, usage, wall=wall)

    assert cap.take("b", urgent=False)
    cap.settle("b", Outcome.ACCEPTED, None)
    assert cap.capped() == {"b"} and not cap.take("b", urgent=False)
    wall.advance(86400.0)  # day 2: a cap of 2, and a new day's count
    assert cap.capped() == frozenset()
    assert cap.take("b", urgent=False)


def test_a_refused_request_frees_its_unit_and_a_429_blocks_the_vendor() -> None:
    cap, clock, usage = capacity()

    assert cap.take("a", urgent=True)
    cap.settle("a", Outcome.RATE_LIMITED, 5.0)

    assert usage.used("a") == 0
    clock.advance(1.0)  # a token again, but the ESP said five seconds
    assert cap.full(urgent=True) == {"a"}
    clock.advance(4.0)
    assert cap.full(urgent=True) == frozenset()
    assert cap.take("b", urgent=True)
    cap.settle("b", Outcome.UNSUPPORTED, None)  # nothing went out: the unit comes back
    assert usage.used("b") == 0 and usage.sent("b") == 0
