"""Warm-up arithmetic across UTC days, the day's usage counters, min-share weights, caps."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest

from mailmux.config import Config
from mailmux.config_limits import WarmupConfig
from mailmux.routing import Route
from mailmux.warmup import (
    DailyUsage,
    WarmupSchedule,
    caps_on,
    min_shares,
    schedules_from,
    utc_day,
    warm_weights,
    warmup_status,
)

MAY1 = dt.date(2024, 5, 1)


def at(day: dt.date, hour: int = 0, minute: int = 0, second: float = 0) -> float:
    """The epoch instant of `day` at hh:mm:ss UTC."""
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
    return midnight + hour * 3600 + minute * 60 + second


def ramp(**fields: object) -> WarmupSchedule:
    return WarmupSchedule.from_config(WarmupConfig.model_validate({"start": MAY1, **fields}))


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- schedules


def test_utc_day_turns_at_utc_midnight_whatever_the_local_zone() -> None:
    assert utc_day(at(MAY1, 23, 59, 59.999)) == MAY1
    assert utc_day(at(MAY1) + 86400) == dt.date(2024, 5, 2)
    assert utc_day(at(MAY1) - 0.001) == dt.date(2024, 4, 30)


def test_daily_caps_day_by_day() -> None:
    s = ramp(daily_caps=[50, 100, 0, 400])
    days = [MAY1 + dt.timedelta(days=i) for i in range(-2, 6)]
    assert [s.day_number(d) for d in days] == [-1, 0, 1, 2, 3, 4, 5, 6]
    assert [s.cap(d) for d in days] == [0, 0, 50, 100, 0, 400, None, None]
    assert [s.days_left(d) for d in days] == [6, 5, 4, 3, 2, 1, 0, 0]


def test_growth_caps_round_start_cap_times_growth_to_the_day() -> None:
    s = ramp(start_cap=100, growth=1.5, days=4)
    assert s.caps == (100, 150, 225, 338)  # 337.5 rounds to even: 338
    assert s.cap(MAY1 + dt.timedelta(days=3)) == 338
    assert s.cap(MAY1 + dt.timedelta(days=4)) is None  # after the ramp: no cap
    assert len(ramp(start_cap=10, growth=1.1).caps) == 30  # days defaults to 30


def test_the_cap_changes_exactly_at_utc_midnight() -> None:
    s = ramp(daily_caps=[10, 20])
    assert s.cap(utc_day(at(MAY1) - 0.001)) == 0  # before start: nothing new
    assert s.cap(utc_day(at(MAY1))) == 10
    assert s.cap(utc_day(at(MAY1, 23, 59, 59.999))) == 10
    assert s.cap(utc_day(at(MAY1) + 86400)) == 20
    assert s.cap(utc_day(at(MAY1) + 2 * 86400)) is None


def test_min_share_only_has_no_ramp() -> None:
    s = WarmupSchedule.from_config(WarmupConfig(min_share=0.1))
    assert (s.day_number(MAY1), s.cap(MAY1), s.days_left(MAY1), s.min_share) == (
        None,
        None,
        0,
        0.1,
    )


def test_schedules_from_the_config() -> None:
    config = Config.model_validate(
        {
            "vendors": {
                "a": {"kind": "sandbox", "weight": 1, "warmup": {"min_share": 0.2}},
                "b": {"kind": "sandbox", "weight": 1},
            }
        }
    )
    found = schedules_from(config.vendors)
    assert found == {"a": WarmupSchedule(min_share=0.2)}
    assert min_shares({**found, "c": ramp(daily_caps=[1])}) == {"a": 0.2}


# ---------------------------------------------------------------- the day's usage


def test_usage_rolls_over_at_utc_midnight_and_keeps_what_is_in_flight() -> None:
    wall = Wall(at(MAY1, 23, 59, 59))
    usage = DailyUsage(wall)
    for sent in (True, True, None):
        assert usage.reserve("a", None)
        if sent is not None:
            usage.settle("a", sent)
    assert (usage.today(), usage.sent("a"), usage.reserved("a")) == (MAY1, 2, 1)
    wall.t += 1.0  # 00:00:00 on May 2
    assert (usage.today(), usage.sent("a"), usage.reserved("a")) == (dt.date(2024, 5, 2), 0, 1)
    usage.settle("a", sent=True)  # the attempt begun yesterday counts today
    assert usage.sent("a") == 1
    assert usage.take_unflushed() == {("a", "2024-05-01"): 2, ("a", "2024-05-02"): 1}
    assert usage.take_unflushed() == {}


def test_reserve_keeps_to_the_cap_counting_what_is_in_flight() -> None:
    usage = DailyUsage(Wall(at(MAY1, 12)))
    assert [usage.reserve("a", 2) for _ in range(3)] == [True, True, False]
    usage.settle("a", sent=False)
    assert usage.reserve("a", 2)
    usage.settle("a", sent=True)
    usage.settle("a", sent=True)
    assert not usage.reserve("a", 2)
    assert usage.reserve("a", 3)
    assert usage.reserve("b", 0) is False
    with pytest.raises(ValueError, match="without a reservation"):
        usage.settle("b", sent=True)


async def test_concurrent_reservations_send_exactly_the_cap() -> None:
    """Many attempts race for a cap of N; some fail and free their unit; exactly N are sent."""
    usage = DailyUsage(Wall(at(MAY1, 12)))
    rng = random.Random(7)
    cap = 25

    async def attempt() -> bool:
        while True:
            if not usage.reserve("a", cap):
                if usage.sent("a") >= cap:
                    return False
                await asyncio.sleep(0)  # held by attempts in flight: look again
                continue
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)  # the attempt takes a while
            sent = rng.random() < 0.6
            usage.settle("a", sent)
            if sent:
                return True

    results = await asyncio.gather(*(attempt() for _ in range(200)))
    assert sum(results) == cap
    assert (usage.sent("a"), usage.reserved("a")) == (cap, 0)


def test_seed_adds_the_stored_counts_of_today_only() -> None:
    usage = DailyUsage(Wall(at(MAY1, 12)))
    assert usage.reserve("a", None)
    usage.settle("a", sent=True)
    usage.seed(MAY1, {"a": 10, "b": 4})
    usage.seed(dt.date(2024, 4, 30), {"a": 99})
    assert usage.counts() == {"a": 11, "b": 4}
    assert usage.take_unflushed() == {("a", "2024-05-01"): 1}  # seeded counts are stored already


# ---------------------------------------------------------------- caps and min shares


def capped(schedules: dict[str, WarmupSchedule], usage: DailyUsage, day: dt.date) -> frozenset[str]:
    """The vendors a plan on `day` treats as capped (as `Capacity.capped` finds them)."""
    return frozenset(usage.at_cap(caps_on(schedules, day)))


def test_capped_counts_sent_and_in_flight_against_today_cap() -> None:
    usage = DailyUsage(Wall(at(MAY1, 12)))
    plans = {
        "new": ramp(daily_caps=[2]),
        "later": WarmupSchedule(start=MAY1 + dt.timedelta(days=3), caps=(5,)),
        "warm": WarmupSchedule(min_share=0.1),
    }
    assert capped(plans, usage, MAY1) == {"later"}  # before start: cap 0
    usage.reserve("new", None)
    assert capped(plans, usage, MAY1) == {"later"}
    usage.reserve("new", None)
    assert capped(plans, usage, MAY1) == {"new", "later"}
    usage.settle("new", sent=False)
    assert capped(plans, usage, MAY1) == {"later"}
    assert capped(plans, usage, MAY1 + dt.timedelta(days=1)) == {"later"}  # ramp over: no cap


def share(routes: tuple[Route, ...], vendor: str) -> float:
    weighted = [r for r in routes if not r.drained and r.weight > 0]
    return sum(r.weight for r in weighted if r.vendor == vendor) / sum(r.weight for r in weighted)


def test_a_vendor_below_its_min_share_gets_the_weight_for_exactly_that_share() -> None:
    routes = (Route("a", 100.0), Route("backup", 0.0))
    warmed = warm_weights(routes, {"a": 990, "backup": 10}, {"backup": 0.05})
    assert share(warmed, "backup") == pytest.approx(0.05)
    assert warmed[0] == routes[0]
    assert warm_weights(routes, {}, {"backup": 0.05})[1].weight > 0  # nothing sent yet: below


def test_a_vendor_at_or_above_its_min_share_keeps_its_weight() -> None:
    routes = (Route("a", 50.0), Route("b", 50.0))
    assert warm_weights(routes, {"a": 90, "b": 10}, {"b": 0.1}) == routes
    assert warm_weights(routes, {"a": 99, "b": 1}, {"b": 0.2}) == routes  # its weight gives 50 %
    assert warm_weights(routes, {"a": 1}, {}) == routes


def test_several_min_shares_are_met_together() -> None:
    routes = (Route("a", 80.0), Route("b", 20.0), Route("c", 0.0), Route("d", 5.0, drained=True))
    mins = {"b": 0.3, "c": 0.1, "d": 0.2}
    warmed = warm_weights(routes, {"a": 1000}, mins)
    assert share(warmed, "b") == pytest.approx(0.3)  # 20 % by weight, raised to 30 %
    assert share(warmed, "c") == pytest.approx(0.1)
    assert warmed[3] == routes[3]  # a drain outranks a min share
    assert share(warmed, "a") == pytest.approx(0.6)


def test_raising_one_vendor_may_push_another_below_its_share() -> None:
    """b's weight alone gives it 20 % ≥ its 15 %, until c is raised to 40 %."""
    routes = (Route("a", 80.0), Route("b", 20.0), Route("c", 0.0))
    warmed = warm_weights(routes, {"a": 100}, {"b": 0.15, "c": 0.4})
    assert share(warmed, "c") == pytest.approx(0.4)
    assert share(warmed, "b") >= 0.15 - 1e-9


def test_only_min_share_vendors_left_share_by_their_min_shares() -> None:
    routes = (Route("a", 0.0), Route("b", 0.0), Route("c", 10.0, drained=True))
    warmed = warm_weights(routes, {}, {"a": 0.1, "b": 0.3})
    assert share(warmed, "a") == pytest.approx(0.25)
    assert share(warmed, "b") == pytest.approx(0.75)


def test_warmup_status_shows_each_schedule_today() -> None:
    usage = DailyUsage(Wall(at(MAY1 + dt.timedelta(days=1), 9)))
    usage.seed(MAY1 + dt.timedelta(days=1), {"new": 30, "old": 90})
    assert usage.reserve("new", None)
    rows = warmup_status(
        {"new": ramp(daily_caps=[50, 100, 200]), "old": WarmupSchedule(min_share=0.2)}, usage
    )
    assert rows == [
        {
            "vendor": "new",
            "start": "2024-05-01",
            "day": 2,
            "ramp_days": 3,
            "cap": 100,
            "sent": 30,
            "in_flight": 1,
            "days_left": 2,
            "min_share": None,
            "share": 0.25,
        },
        {
            "vendor": "old",
            "start": None,
            "day": None,
            "ramp_days": 0,
            "cap": None,
            "sent": 90,
            "in_flight": 0,
            "days_left": 0,
            "min_share": 0.2,
            "share": 0.75,
        },
    ]


def test_random_routes_every_vendor_below_reaches_its_min_share() -> None:
    """Whatever the weights: each vendor below gets at least its min share, a raised one
    exactly it, and a vendor without a min share is never raised."""
    rng = random.Random(10)
    for _ in range(500):
        names = [f"v{i}" for i in range(rng.randrange(2, 8))]
        routes = tuple(Route(n, rng.choice([0.0, 1.0, 5.0, rng.uniform(0, 100)])) for n in names)
        if not any(r.weight for r in routes):
            continue
        picked = rng.sample(names, rng.randrange(1, len(names)))
        budget = rng.uniform(0.05, 0.95)
        mins = {n: budget * w for n, w in zip(picked, _split(rng, len(picked)), strict=True)}
        warmed = warm_weights(routes, {}, mins)  # nothing sent yet: every min share is below
        for before, after in zip(routes, warmed, strict=True):
            got = share(warmed, after.vendor)
            if after.vendor in mins:
                assert got >= mins[after.vendor] - 1e-9
                if after.weight != before.weight:
                    assert got == pytest.approx(mins[after.vendor])
            else:
                assert after == before


def _split(rng: random.Random, n: int) -> list[float]:
    """n positive parts summing to 1."""
    parts = [rng.uniform(0.1, 1) for _ in range(n)]
    return [p / sum(parts) for p in parts]
