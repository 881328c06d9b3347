"""Capacity: what each vendor may take right now, as the Deliverer asks it per message.

It puts the vendor rate limits and daily quotas (`Limiter`) and the
warm-up schedules (caps and min shares) over one `DailyUsage`, so that a
message is counted once whatever limits it, and gives the Deliverer the few
questions it needs on its hot path:

- `full(urgent)`: vendors to leave out of the plan now (the plan's `full=`);
- `capped()`: vendors past today's warm-up cap (the plan's `capped=`);
- `warm(routes)`: the routes with the min-share vendors' weights raised;
- `take` before each attempt, then exactly one of `settle` (the request went
  out, with its outcome) or `give_back` (it never did).

A configuration without limits or schedules costs a few dictionary reads per
message: every attempt is still counted, so `mailmux warmup` and min shares
see every vendor's day. Pure apart from the injected clocks.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from mailmux.config import Config
from mailmux.config_limits import RateLimit
from mailmux.limiter import Limiter, limits_from
from mailmux.routing import Route
from mailmux.vendors.base import Outcome
from mailmux.warmup import (
    DailyUsage,
    WarmupSchedule,
    caps_on,
    min_shares,
    schedules_from,
    warm_weights,
)

#: How long the weights `warm` raised are kept before today's shares are looked at again.
SHARES_EVERY: Final = 1.0
#: Outcomes whose request may have reached the vendor's queue: they count as sent today.
_MAY_HAVE_SENT: Final = frozenset({Outcome.ACCEPTED, Outcome.AMBIGUOUS})
_NONE: Final[frozenset[str]] = frozenset()


class Capacity:
    """Rate limits, daily quotas, warm-up caps and min shares of one config, on one usage."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        schedules: Mapping[str, WarmupSchedule],
        usage: DailyUsage,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.usage = usage
        self.limiter = Limiter(limits, usage, clock, wall)
        self._clock = clock
        self._schedules: dict[str, WarmupSchedule] = {}
        self._min_shares: dict[str, float] = {}
        self._caps: dict[str, int] = {}
        self._caps_day: dt.date | None = None
        self._warmed: dict[tuple[Route, ...], tuple[Route, ...]] = {}
        self._warmed_until = 0.0
        self.reconcile(limits, schedules)

    @classmethod
    def from_config(
        cls,
        config: Config,
        usage: DailyUsage,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> Capacity:
        return cls(
            limits_from(config.vendors),
            schedules_from(config.vendors),
            usage,
            clock=clock,
            wall=wall,
        )

    @classmethod
    def unlimited(cls, usage: DailyUsage | None = None) -> Capacity:
        """No limits and no schedules: every attempt is counted, none is held back."""
        return cls({}, {}, usage if usage is not None else DailyUsage())

    @property
    def schedules(self) -> Mapping[str, WarmupSchedule]:
        return self._schedules

    def reconcile(
        self, limits: Mapping[str, RateLimit], schedules: Mapping[str, WarmupSchedule]
    ) -> None:
        """Apply a reloaded config's limits and schedules (buckets keep their tokens)."""
        self.limiter.reconcile(limits)
        self._schedules = dict(schedules)
        self._min_shares = min_shares(schedules)
        self._caps_day = None
        self._warmed = {}
        self._warmed_until = 0.0

    def full(self, *, urgent: bool) -> frozenset[str]:
        """Vendors at a rate limit, quota or ESP-told wait for one more message now."""
        return self.limiter.unavailable(urgent=urgent)

    def capped(self) -> frozenset[str]:
        """Vendors whose warm-up cap for today is reached by sent + in-flight messages."""
        if not self._schedules:
            return _NONE
        caps = self._caps_today()
        if not caps:
            return _NONE
        return frozenset(self.usage.at_cap(caps))

    def warm(self, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        """`routes` with each vendor below its min share raised to it (`warm_weights`).

        Today's shares move slowly, so the raised routes of each route set are
        kept for `SHARES_EVERY` seconds instead of being worked out per message.
        """
        if not self._min_shares:
            return routes
        now = self._clock()
        if now >= self._warmed_until:
            self._warmed = {}
            self._warmed_until = now + SHARES_EVERY
        warmed = self._warmed.get(routes)
        if warmed is None:
            warmed = self._warmed[routes] = warm_weights(
                routes, self.usage.counts(), self._min_shares
            )
        return warmed

    def take(self, vendor: str, *, urgent: bool, over_cap: bool = False) -> bool:
        """Hold a token and a unit of today for one attempt, or nothing and return False.

        `over_cap`: the plan put the vendor past its warm-up cap (no other
        vendor could take the message), so only its rate limit and quota apply.
        """
        cap = None if over_cap else self._caps_today().get(vendor)
        return self.limiter.try_take(vendor, urgent=urgent, cap=cap)

    def give_back(self, vendor: str) -> None:
        """The attempt `take` allowed never sent a request."""
        self.limiter.give_back(vendor)

    def settle(self, vendor: str, outcome: Outcome, retry_after: float | None) -> None:
        """The attempt `take` allowed ended with `outcome`.

        A rate-limit answer with a retry-after blocks the vendor until then:
        the plan skips it, and its health is not blamed for it.
        """
        if outcome is Outcome.UNSUPPORTED:  # refused before any request went out
            self.limiter.give_back(vendor)
            return
        self.usage.settle(vendor, sent=outcome in _MAY_HAVE_SENT)
        if outcome is Outcome.RATE_LIMITED and retry_after is not None:
            self.limiter.block(vendor, retry_after)

    def wait_time(self, vendors: Iterable[str], *, urgent: bool) -> float:
        """Seconds until one of `vendors` can take a message (inf: none of them)."""
        return self.limiter.wait_time(vendors, urgent=urgent)

    def _caps_today(self) -> dict[str, int]:
        day = self.usage.today()
        if day != self._caps_day:
            self._caps = caps_on(self._schedules, day)
            self._caps_day = day
        return self._caps
