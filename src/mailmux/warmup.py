"""Warm-up schedules and the day's usage counters: how much each vendor may and did take today.

A new vendor's IP reputation is built with a steady, slowly rising volume:
its warm-up schedule caps what it gets each UTC day, from `start` (day 1)
for the length of the ramp; after the ramp it has no cap. Before `start`
the cap is 0: a vendor added to the config ahead of its warm-up gets
nothing new until its day 1 (it is still used when no other vendor can
take a message, like any capped vendor). An established vendor is kept
warm by `min_share`: below that share of the day's messages it gets the
weight that brings its share of first picks up to it (`warm_weights`).

`DailyUsage` is this node's view of today's counts per vendor: messages
sent, and messages reserved by attempts in flight. The limiter's daily
quota (`rate_limit.per_day`) and the warm-up caps both count on it, so a
message is counted once whatever limits it. It is seeded from the store at
start and written behind to it as increments (`mailmux.usage_writer`), so
several nodes can later share the counters.

Everything here is pure: days are `datetime.date`s (UTC), and DailyUsage
reads an injected wall clock.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailmux.config import VendorConfig
from mailmux.config_limits import WarmupConfig
from mailmux.routing import Route

_DAY = 86400.0


def utc_day(t: float) -> dt.date:
    """The UTC day of the epoch instant `t` (the day counters and schedules use)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).date()


def next_midnight(day: dt.date) -> float:
    """The epoch instant the UTC day after `day` begins."""
    return dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() + _DAY


@dataclass(frozen=True, slots=True)
class WarmupSchedule:
    """One vendor's schedule: `caps[i]` is the cap on day i + 1 (day 1 is `start`).

    The growth form is expanded at construction (`round(start_cap * growth**i)`
    for i < days), so both ramp forms are the same list of caps.
    """

    start: dt.date | None = None  # None: no ramp (min_share only)
    caps: tuple[int, ...] = ()
    min_share: float | None = None

    @classmethod
    def from_config(cls, config: WarmupConfig) -> WarmupSchedule:
        if config.daily_caps is not None:
            caps = config.daily_caps
        elif config.start_cap is not None and config.growth is not None:
            caps = tuple(
                round(config.start_cap * config.growth**i) for i in range(config.ramp_days)
            )
        else:
            caps = ()
        return cls(start=config.start, caps=caps, min_share=config.min_share)

    def day_number(self, day: dt.date) -> int | None:
        """Which day of the ramp `day` is: 1 on `start`, ≤ 0 before it; None without a ramp."""
        if self.start is None:
            return None
        return (day - self.start).days + 1

    def cap(self, day: dt.date) -> int | None:
        """Messages the vendor may take on `day`: 0 before `start`, None (no cap) after the ramp."""
        number = self.day_number(day)
        if number is None or number > len(self.caps):
            return None
        return 0 if number < 1 else self.caps[number - 1]

    def days_left(self, day: dt.date) -> int:
        """Days from `day` on (itself included) that still have a cap; 0 once the ramp is over."""
        number = self.day_number(day)
        if number is None:
            return 0
        return max(0, len(self.caps) - number + 1)


def schedules_from(vendors: Mapping[str, VendorConfig]) -> dict[str, WarmupSchedule]:
    """The warm-up schedule of each configured vendor that has one (`VendorConfig.warmup`)."""
    return {
        name: WarmupSchedule.from_config(vendor.warmup)
        for name, vendor in vendors.items()
        if vendor.warmup is not None
    }


def min_shares(schedules: Mapping[str, WarmupSchedule]) -> dict[str, float]:
    """Vendor → min share, for `warm_weights`, of the schedules that set one."""
    return {v: s.min_share for v, s in schedules.items() if s.min_share is not None}


class DailyUsage:
    """Today's messages per vendor on this node: sent, and reserved by attempts in flight.

    `reserve` and `settle` are synchronous, so on one event loop a check and
    its reservation never interleave with another's: with a cap of N, exactly
    N reservations succeed however many race. At UTC midnight `sent` starts
    again from 0; reservations in flight carry over (their attempts end, and
    count, on the new day). Sent messages are also kept, per (vendor, day),
    until `take_unflushed` hands them to the store.
    """

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._day = utc_day(wall())
        self._rolls_at = next_midnight(self._day)
        self._sent: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._unflushed: dict[tuple[str, str], int] = {}

    def today(self) -> dt.date:
        """The UTC day the counts are for (rolled over first if midnight has passed)."""
        now = self._wall()
        if now >= self._rolls_at:
            self._day = utc_day(now)
            self._rolls_at = next_midnight(self._day)
            self._sent = {}
        return self._day

    def sent(self, vendor: str) -> int:
        self.today()
        return self._sent.get(vendor, 0)

    def reserved(self, vendor: str) -> int:
        """Attempts in flight that hold a unit of `vendor`'s day."""
        return self._in_flight.get(vendor, 0)

    def used(self, vendor: str) -> int:
        """Sent today plus in flight: what counts against a cap."""
        self.today()
        return self._sent.get(vendor, 0) + self._in_flight.get(vendor, 0)

    def at_cap(self, caps: Mapping[str, int]) -> list[str]:
        """The vendors in `caps` whose sent + in flight today reach their cap (one pass)."""
        self.today()
        sent, held = self._sent, self._in_flight
        return [v for v, cap in caps.items() if sent.get(v, 0) + held.get(v, 0) >= cap]

    def counts(self) -> dict[str, int]:
        """Sent today, per vendor that sent any."""
        self.today()
        return dict(self._sent)

    def reserve(self, vendor: str, cap: int | None) -> bool:
        """Hold one unit of today for an attempt if sent + in flight < `cap` (None: no cap)."""
        if cap is not None and self.used(vendor) >= cap:
            return False
        self._in_flight[vendor] = self._in_flight.get(vendor, 0) + 1
        return True

    def settle(self, vendor: str, sent: bool) -> None:
        """The attempt holding a unit ended: counted as sent today, or the unit is free again."""
        held = self._in_flight.get(vendor, 0)
        if held < 1:
            raise ValueError(f"settle({vendor!r}) without a reservation")
        self._in_flight[vendor] = held - 1
        if sent:
            day = self.today()
            self._sent[vendor] = self._sent.get(vendor, 0) + 1
            key = (vendor, day.isoformat())
            self._unflushed[key] = self._unflushed.get(key, 0) + 1

    def seed(self, day: dt.date, counts: Mapping[str, int]) -> None:
        """Add what the store already counted for `day` (ignored once `day` is over)."""
        if day != self.today():
            return
        for vendor, n in counts.items():
            self._sent[vendor] = self._sent.get(vendor, 0) + n

    def take_unflushed(self) -> dict[tuple[str, str], int]:
        """The sent counts not yet in the store, per (vendor, "YYYY-MM-DD"); forgotten here."""
        taken, self._unflushed = self._unflushed, {}
        return taken

    def restore_unflushed(self, counts: Mapping[tuple[str, str], int]) -> None:
        """A write of `take_unflushed`'s counts failed: keep them for the next one."""
        for key, n in counts.items():
            self._unflushed[key] = self._unflushed.get(key, 0) + n


def caps_on(schedules: Mapping[str, WarmupSchedule], day: dt.date) -> dict[str, int]:
    """Each capped vendor's warm-up cap on `day` (vendors past their ramp have none).

    A vendor whose sent + in-flight messages reach it (`DailyUsage.at_cap`) is
    capped: the plan gives it no first picks and uses it only in panic or when
    no other vendor can take the message.
    """
    return {v: cap for v, s in schedules.items() if (cap := s.cap(day)) is not None}


def warm_weights(
    routes: Sequence[Route], usage_today: Mapping[str, int], min_shares: Mapping[str, float]
) -> tuple[Route, ...]:
    """Raise the weight of each vendor below its min_share of today's messages.

    A vendor is below when its share of today's sent messages (every vendor's
    count in `usage_today`; none sent yet counts as below) is under its min
    share. Such a vendor gets the weight that makes its share of first picks
    exactly its min share: with B the raised vendors, M the sum of their min
    shares and W the weight of the other first-pick routes, vendor b gets
    `min_share_b * W / (1 - M)`. A vendor whose own weight already gives it
    more keeps it; raising one vendor lowers the others' shares, so vendors
    are added to B until none left out is below. Drained routes are left
    alone. The config keeps the min shares' sum below 1; should the raised
    ones reach it anyway, or no other route have weight, each raised vendor's
    weight is its min share.
    """
    if not min_shares:
        return tuple(routes)
    total = sum(usage_today.values())
    below = {
        r.vendor: min_shares[r.vendor]
        for r in routes
        if r.vendor in min_shares
        and not r.drained
        and (total == 0 or usage_today.get(r.vendor, 0) / total < min_shares[r.vendor])
    }
    if not below:
        return tuple(routes)
    weights = {r.vendor: r.weight for r in routes if not r.drained}
    rest = sum(weights.values())  # the weight of the first-pick routes not raised
    raised: list[str] = []
    share_sum = 0.0  # M
    scale = 1.0  # W / (1 - M): a raised vendor's weight is its min share times this
    first_picks = rest
    while True:
        more = [
            v
            for v, share in below.items()
            if v not in raised and (first_picks <= 0 or weights[v] < share * first_picks)
        ]
        if not more:
            break
        raised += more
        share_sum += sum(below[v] for v in more)
        rest -= sum(weights[v] for v in more)
        scale = 1.0 if share_sum >= 1 or rest <= 0 else rest / (1 - share_sum)
        first_picks = max(rest, 0.0) + share_sum * scale
    if not raised:
        return tuple(routes)
    new = {v: below[v] * scale for v in raised}
    # Route(...) rather than dataclasses.replace, which costs microseconds per call.
    return tuple(
        Route(r.vendor, new[r.vendor], r.fallback, r.drained) if r.vendor in new else r
        for r in routes
    )


def warmup_status(
    schedules: Mapping[str, WarmupSchedule], usage: DailyUsage
) -> list[dict[str, Any]]:
    """Each schedule today, for `mailmux warmup` and `GET /admin/v1/warmup`."""
    day = usage.today()
    counts = usage.counts()
    total = sum(counts.values())
    return [
        {
            "vendor": vendor,
            "start": None if s.start is None else s.start.isoformat(),
            "day": s.day_number(day),
            "ramp_days": len(s.caps),
            "cap": s.cap(day),
            "sent": counts.get(vendor, 0),
            "in_flight": usage.reserved(vendor),
            "days_left": s.days_left(day),
            "min_share": s.min_share,
            "share": counts.get(vendor, 0) / total if total else None,
        }
        for vendor, s in schedules.items()
    ]
