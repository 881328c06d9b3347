"""The limiter with fake clocks: refill, burst, the urgent reserve, daily quotas, blocks."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from mailmux.config import Config
from mailmux.config_limits import RateLimit
from mailmux.limiter import SETTLE_POLL, Limiter, limits_from
from mailmux.warmup import DailyUsage

# 23:59:50 UTC: ten seconds before the day's quota starts again.
LATE = dt.datetime(2024, 5, 1, 23, 59, 50, tzinfo=dt.UTC).timestamp()


class Clocks:
    """A monotonic clock and a wall clock that advance together."""

    def __init__(self, wall: float = LATE) -> None:
        self.mono = 1000.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def limiter(clocks: Clocks, **limits: RateLimit) -> tuple[Limiter, DailyUsage]:
    usage = DailyUsage(wall=lambda: clocks.wall)
    return Limiter(limits, usage, clock=lambda: clocks.mono, wall=lambda: clocks.wall), usage


def take(lim: Limiter, vendor: str, n: int, *, urgent: bool = True) -> int:
    """Try `n` takes; how many succeeded."""
    return sum(lim.try_take(vendor, urgent=urgent) for _ in range(n))


def test_a_full_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clocks = Clocks()
    lim, _ = limiter(clocks, a=RateLimit(per_second=10, burst=5))
    assert take(lim, "a", 8) == 5
    assert lim.unavailable() == {"a"}
    clocks.advance(0.1)  # one token
    assert take(lim, "a", 3) == 1
    clocks.advance(10)  # refills up to the burst, not beyond
    assert take(lim, "a", 20) == 5


def test_the_default_burst_is_per_second() -> None:
    clocks = Clocks()
    lim, _ = limiter(clocks, a=RateLimit(per_second=3), slow=RateLimit(per_second=0.5))
    assert take(lim, "a", 10) == 3
    assert take(lim, "slow", 10) == 1  # at least one message at once
    clocks.advance(1.0)
    assert take(lim, "slow", 10) == 0  # half a token
    clocks.advance(1.0)
    assert take(lim, "slow", 10) == 1


def test_a_backlog_leaves_the_reserve_to_urgent_messages() -> None:
    clocks = Clocks()
    lim, _ = limiter(clocks, a=RateLimit(per_second=200))  # reserve: 5 % of 200 = 10
    assert take(lim, "a", 500, urgent=False) == 190
    assert lim.unavailable(urgent=False) == {"a"}
    assert lim.unavailable() == frozenset()  # an urgent message can still go
    assert take(lim, "a", 500, urgent=True) == 10
    assert lim.unavailable() == {"a"}


def test_the_reserve_is_at_least_one_token_and_leaves_one_to_the_backlog() -> None:
    clocks = Clocks()
    lim, _ = limiter(
        clocks,
        small=RateLimit(per_second=2, burst=2),  # 5 % is 0.1: one token reserved
        single=RateLimit(per_second=2, burst=1),  # a burst of one keeps no reserve
    )
    assert take(lim, "small", 5, urgent=False) == 1
    assert take(lim, "small", 5, urgent=True) == 1
    assert take(lim, "single", 5, urgent=False) == 1


def test_the_backlog_still_drains_at_the_full_rate() -> None:
    """The reserve costs the backlog part of its burst, never its rate."""
    clocks = Clocks()
    lim, _ = limiter(clocks, a=RateLimit(per_second=100))
    take(lim, "a", 1000, urgent=False)  # the burst above the reserve
    sent = 0
    for _ in range(1000):  # ten seconds in steps of 10 ms
        clocks.advance(0.01)
        sent += take(lim, "a", 5, urgent=False)
    assert sent == 1000


def test_the_daily_quota_ends_at_utc_midnight() -> None:
    clocks = Clocks()
    lim, usage = limiter(clocks, a=RateLimit(per_day=3))
    for _ in range(3):
        assert lim.try_take("a", urgent=True)
        usage.settle("a", sent=True)
    assert not lim.try_take("a", urgent=True)
    assert lim.unavailable() == {"a"}
    assert lim.wait_time(["a"]) == pytest.approx(10.0)  # until 00:00 UTC
    clocks.advance(9.9)
    assert not lim.try_take("a", urgent=True)
    clocks.advance(0.1)
    assert lim.unavailable() == frozenset()
    assert take(lim, "a", 5) == 3  # a new day's three


def test_units_in_flight_count_against_the_quota_until_settled() -> None:
    clocks = Clocks()
    lim, usage = limiter(clocks, a=RateLimit(per_day=2))
    assert take(lim, "a", 5) == 2  # both in flight
    assert lim.wait_time(["a"]) == SETTLE_POLL  # they may yet come back
    usage.settle("a", sent=False)  # refused by the ESP: the unit is free again
    assert lim.try_take("a", urgent=True)
    lim.give_back("a")  # never sent
    assert lim.try_take("a", urgent=True)
    assert not lim.try_take("a", urgent=True)


def test_a_refused_take_takes_nothing() -> None:
    """The bucket refuses: no unit is held; the quota refuses: no token is spent."""
    clocks = Clocks()
    lim, usage = limiter(
        clocks, a=RateLimit(per_second=1, burst=1, per_day=5), b=RateLimit(per_second=1, per_day=1)
    )
    assert lim.try_take("a", urgent=True)
    assert not lim.try_take("a", urgent=True)  # the bucket is empty
    assert usage.reserved("a") == 1
    assert lim.try_take("b", urgent=True)
    usage.settle("b", sent=True)
    clocks.advance(5)  # b's bucket is full again
    assert not lim.try_take("b", urgent=True)  # the quota is used up ...
    assert lim.wait_time(["b"]) == pytest.approx(5.0)  # ... until midnight, tokens or not
    lim.reconcile({"b": RateLimit(per_second=1)})  # lifting the quota shows the token kept
    assert lim.try_take("b", urgent=True)


def test_give_back_refunds_the_token() -> None:
    clocks = Clocks()
    lim, usage = limiter(clocks, a=RateLimit(per_second=1, burst=2))
    assert take(lim, "a", 3) == 2
    lim.give_back("a")
    assert take(lim, "a", 3) == 1
    for _ in range(3):  # a refund never overfills the bucket
        assert usage.reserve("a", None)
        lim.give_back("a")
    assert take(lim, "a", 3) == 2


def test_a_block_skips_the_vendor_until_its_retry_after() -> None:
    clocks = Clocks()
    lim, _ = limiter(clocks, a=RateLimit(per_second=10))
    lim.block("a", 2.0)
    lim.block("b", 1.0)  # a vendor without a configured limit is blocked as well
    lim.block("a", 0.5)  # a shorter retry-after does not end a longer block
    assert lim.unavailable() == {"a", "b"}
    assert not lim.try_take("a", urgent=True)
    assert lim.wait_time(["a", "b"]) == pytest.approx(1.0)
    clocks.advance(1.0)
    assert lim.unavailable() == {"a"}
    assert lim.try_take("b", urgent=True)
    assert lim.wait_time(["a"]) == pytest.approx(1.0)
    clocks.advance(1.0)
    assert lim.try_take("a", urgent=True)
    lim.block("a", 0)  # no retry-after: nothing
    assert lim.unavailable() == frozenset()


def test_wait_time_is_the_soonest_vendor_and_counts_the_reserve_for_a_backlog() -> None:
    clocks = Clocks()
    lim, _ = limiter(clocks, a=RateLimit(per_second=100), b=RateLimit(per_second=10, burst=1))
    take(lim, "a", 1000)
    take(lim, "b", 10)
    assert lim.wait_time(["a"]) == pytest.approx(0.01)
    assert lim.wait_time(["a"], urgent=False) == pytest.approx(0.06)  # 5 reserve + 1
    assert lim.wait_time(["b"]) == pytest.approx(0.1)
    assert lim.wait_time(["a", "b"]) == pytest.approx(0.01)
    assert lim.wait_time(["c"]) == 0.0  # no limit at all
    assert lim.wait_time([]) == math.inf
    lim.block("a", 1.0)  # a block, then a token
    assert lim.wait_time(["a"]) == pytest.approx(1.0)


def test_every_vendor_is_counted_limited_or_not() -> None:
    clocks = Clocks()
    lim, usage = limiter(clocks)
    assert take(lim, "free", 3) == 3
    assert usage.reserved("free") == 3


def test_a_warmup_cap_passed_to_try_take_is_kept_with_the_quota() -> None:
    clocks = Clocks()
    lim, usage = limiter(clocks, a=RateLimit(per_day=5))
    assert sum(lim.try_take("a", urgent=True, cap=2) for _ in range(4)) == 2
    assert sum(lim.try_take("a", urgent=True, cap=100) for _ in range(4)) == 3  # per_day: 5
    assert sum(lim.try_take("free", urgent=True, cap=1) for _ in range(4)) == 1
    assert usage.reserved("a") == 5


def test_reconcile_keeps_unchanged_buckets_and_never_hands_out_a_fresh_burst() -> None:
    clocks = Clocks()
    same, changed = RateLimit(per_second=10), RateLimit(per_second=10)
    lim, _ = limiter(clocks, a=same, b=changed, gone=RateLimit(per_second=1))
    take(lim, "a", 10)
    take(lim, "b", 8)  # 2 tokens left
    lim.block("a", 5.0)
    lim.reconcile({"a": RateLimit(per_second=10), "b": RateLimit(per_second=50, burst=100)})
    assert lim.wait_time(["a"]) == pytest.approx(5.0)  # the block stays
    assert take(lim, "b", 100) == 2  # the tokens it had, not a fresh 100
    assert take(lim, "gone", 5) == 5  # no longer limited
    clocks.advance(5.0)
    assert take(lim, "a", 100) == 10  # refilled over the 5 s, up to its burst
    assert take(lim, "b", 1000) == 100
    clocks.advance(10.0)  # a is full again: 10 tokens
    lim.reconcile({"a": RateLimit(per_second=1, burst=3)})
    assert take(lim, "a", 10) == 3  # at most the new burst


def test_limits_from_the_config() -> None:
    config = Config.model_validate(
        {
            "vendors": {
                "a": {"kind": "sandbox", "weight": 1, "rate_limit": {"per_second": 5}},
                "b": {"kind": "sandbox", "weight": 1},
            }
        }
    )
    assert limits_from(config.vendors) == {"a": RateLimit(per_second=5)}
