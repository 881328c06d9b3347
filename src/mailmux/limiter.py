"""Vendor rate limits: a token bucket, a daily quota and a block after a 429, per vendor.

An ESP refuses what goes beyond its limits, and a refused attempt costs
time the message may not have. So mailmux keeps under them: a vendor that
cannot take one more message right now is *unavailable* and the plan skips
it, without failing it or counting it against its health. Three things make
a vendor unavailable:

- its token bucket (`rate_limit.per_second`, `burst`) is empty. The bucket
  keeps a reserve (5 % of per_second, at least one token when the burst is
  above one) that only urgent messages may take: a bulk backlog draining at
  the limit leaves the reserve alone, so an OTP never waits behind it. The
  reserve costs the backlog part of its burst, not its rate;
- its daily quota (`rate_limit.per_day`, per UTC day) is used up, counted
  on the shared `DailyUsage` (sent + in flight), where the warm-up caps are
  counted too;
- the ESP said so: a 429 or quota answer with a retry-after `block`s the
  vendor until then, whether or not it has a configured limit.

How a caller accounts for one attempt (every attempt, limited vendor or not,
so that `DailyUsage` counts every vendor's messages):

1. `try_take(vendor, urgent=...)` takes a token and reserves one unit of
   today; False takes nothing and means: skip this vendor now;
2. then exactly one of: `usage.settle(vendor, sent=True)` (accepted, or an
   ambiguous outcome: it may have been sent); `usage.settle(vendor,
   sent=False)` (the request went out and was refused: its token is spent,
   the unit is free again); `give_back(vendor)` (no request went out: both
   come back).

Pure apart from two injected clocks: `clock` (monotonic) paces the buckets
and blocks, `wall` (epoch) says when the UTC day ends. Single-threaded: a
check and its take never interleave on one event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mailmux.config import VendorConfig
from mailmux.config_limits import RateLimit
from mailmux.warmup import DailyUsage, next_midnight

#: The share of per_second kept in the bucket for urgent messages (at least one token).
URGENT_RESERVE = 0.05
#: How soon to look again when the day's quota is held by attempts still in flight.
SETTLE_POLL = 0.1
_NONE: frozenset[str] = frozenset()
_EPS = 1e-9  # refills are float sums: 0.1 s at 10/s may come to 0.9999999999 tokens


@dataclass(slots=True)
class _Bucket:
    rate: float  # tokens per second
    size: float  # capacity
    reserve: float  # tokens only urgent messages may take
    tokens: float
    at: float  # when `tokens` was last brought up to date

    @classmethod
    def full(cls, limit: RateLimit, rate: float, now: float) -> _Bucket:
        size = limit.bucket_size
        reserve = 0.0 if size <= 1 else min(size - 1, max(1.0, URGENT_RESERVE * rate))
        return cls(rate, size, reserve, size, now)

    def level(self, now: float) -> float:
        return min(self.size, self.tokens + (now - self.at) * self.rate)

    def refill(self, now: float) -> None:
        self.tokens = self.level(now)
        self.at = now

    def need(self, urgent: bool) -> float:
        return 1.0 if urgent else 1.0 + self.reserve


class Limiter:
    """Every vendor's bucket, daily quota and block; see the module docstring."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        usage: DailyUsage,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._usage = usage
        self._clock = clock
        self._wall = wall
        self._limits: dict[str, RateLimit] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._per_day: dict[str, int] = {}
        self._blocked: dict[str, float] = {}  # vendor → monotonic instant it may send again
        self.reconcile(limits)

    def unavailable(self, *, urgent: bool = True) -> frozenset[str]:
        """Vendors that cannot take one more (urgent, by default) message right now."""
        if not (self._blocked or self._buckets or self._per_day):
            return _NONE  # nothing limited: the common case costs one test
        now = self._clock()
        out = [v for v, until in self._blocked.items() if until > now]
        for vendor, b in self._buckets.items():  # b.level(now) < b.need(urgent), inlined
            level = b.tokens + (now - b.at) * b.rate
            if level < b.size and level + _EPS < (1.0 if urgent else 1.0 + b.reserve):
                out.append(vendor)
        if self._per_day:
            out += self._usage.at_cap(self._per_day)
        return frozenset(out)

    def try_take(self, vendor: str, *, urgent: bool, cap: int | None = None) -> bool:
        """Take a token and a unit of today for one attempt, or nothing and return False.

        `urgent=False` leaves the bucket's reserve. `cap` is a further limit on
        today's count (the vendor's warm-up cap, when the plan keeps to it):
        the tighter of it and `per_day` applies.
        """
        now = self._clock()
        until = self._blocked.get(vendor)
        if until is not None:
            if until > now:
                return False
            del self._blocked[vendor]
        bucket = self._buckets.get(vendor)
        if bucket is not None:
            bucket.refill(now)
            if bucket.tokens + _EPS < bucket.need(urgent):
                return False
        per_day = self._per_day.get(vendor)
        if per_day is not None:
            cap = per_day if cap is None else min(cap, per_day)
        if not self._usage.reserve(vendor, cap):
            return False
        if bucket is not None:
            bucket.tokens -= 1.0
        return True

    def give_back(self, vendor: str) -> None:
        """The attempt `try_take` allowed never sent a request: its token and unit come back."""
        bucket = self._buckets.get(vendor)
        if bucket is not None:
            bucket.refill(self._clock())
            bucket.tokens = min(bucket.size, bucket.tokens + 1.0)
        self._usage.settle(vendor, sent=False)

    def block(self, vendor: str, seconds: float) -> None:
        """Skip `vendor` for `seconds` (an ESP's retry-after); a longer block already set stays."""
        if not seconds > 0:
            return
        until = self._clock() + seconds
        if until > self._blocked.get(vendor, -math.inf):
            self._blocked[vendor] = until

    def wait_time(self, vendors: Iterable[str], *, urgent: bool = True) -> float:
        """Seconds until any of `vendors` can take one message (0: now; inf: no vendors).

        A backlog passes `urgent=False`: it waits for a token beyond the reserve.
        """
        now = self._clock()
        best = math.inf
        for vendor in vendors:
            best = min(best, self._wait(vendor, now, urgent))
            if best <= 0:
                return 0.0
        return best

    def _wait(self, vendor: str, now: float, urgent: bool) -> float:
        wait = max(0.0, self._blocked.get(vendor, now) - now)
        bucket = self._buckets.get(vendor)
        if bucket is not None:
            short = bucket.need(urgent) - bucket.level(now + wait)
            if short > _EPS:
                wait += short / bucket.rate
        cap = self._per_day.get(vendor)
        if cap is not None:
            sent = self._usage.sent(vendor)
            if sent >= cap:
                wait = max(wait, next_midnight(self._usage.today()) - self._wall())
            elif self._usage.used(vendor) >= cap:
                wait = max(wait, SETTLE_POLL)
        return wait

    def reconcile(self, limits: Mapping[str, RateLimit]) -> None:
        """Apply a reloaded config's limits.

        A vendor whose limit is unchanged keeps its bucket as it is; a changed
        one gets the new bucket with the tokens it had (at most the new
        burst), so a reload never hands out a fresh burst. Blocks stay: they
        are the ESP's word, not the config's.
        """
        now = self._clock()
        buckets: dict[str, _Bucket] = {}
        for vendor, limit in limits.items():
            if limit.per_second is None:
                continue
            old = self._buckets.get(vendor)
            if old is not None and self._limits.get(vendor) == limit:
                buckets[vendor] = old
                continue
            bucket = _Bucket.full(limit, limit.per_second, now)
            if old is not None:
                bucket.tokens = min(bucket.size, old.level(now))
            buckets[vendor] = bucket
        self._buckets = buckets
        self._per_day = {v: lim.per_day for v, lim in limits.items() if lim.per_day is not None}
        self._limits = dict(limits)
        self._blocked = {v: until for v, until in self._blocked.items() if until > now}


def limits_from(vendors: Mapping[str, VendorConfig]) -> dict[str, RateLimit]:
    """The configured rate limit of each vendor that has one."""
    return {n: v.rate_limit for n, v in vendors.items() if v.rate_limit is not None}
