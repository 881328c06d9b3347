"""Outlier detection: every transition against a fake clock, with exact event lists."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mailmux.health import (
    Admission,
    Ejected,
    EjectionReason,
    Health,
    HealthSettings,
    HealthState,
    ProbeAdmitted,
    Recovered,
    VendorStats,
)
from mailmux.routing import Availability
from mailmux.vendors.base import Outcome

NORMAL = Admission.NORMAL
PROBE = Admission.PROBE
PANIC = Admission.PANIC
ACCEPTED = Outcome.ACCEPTED
PERMANENT = Outcome.PERMANENT
RETRIABLE = Outcome.RETRIABLE
FAST = 0.1
SLOW = 3.0  # above the default 2 s p90 threshold
SETTINGS = HealthSettings(consecutive_failures=3)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **settings: float | int | None) -> Health:
    return Health(["a", "b"], HealthSettings(**settings), clock)  # type: ignore[arg-type]


def fail(
    health: Health,
    times: int,
    vendor: str = "a",
    outcome: Outcome = RETRIABLE,
    admission: Admission = NORMAL,
) -> None:
    for _ in range(times):
        health.record(vendor, admission, outcome, FAST)


def succeed(
    health: Health,
    times: int,
    vendor: str = "a",
    latency: float = FAST,
    admission: Admission = NORMAL,
) -> None:
    for _ in range(times):
        health.record(vendor, admission, ACCEPTED, latency)


def stats_of(health: Health, vendor: str = "a") -> VendorStats:
    return next(s for s in health.stats() if s.vendor == vendor)


def eject_by_consecutive(health: Health) -> None:
    fail(health, 5)
    health.take_events()


# --- starting point and bad input ------------------------------------------------------------


def test_new_vendors_are_healthy_and_admitted(clock: FakeClock) -> None:
    health = make(clock)
    assert health.availability() == {"a": Availability.AVAILABLE, "b": Availability.AVAILABLE}
    assert health.admit("a") is NORMAL
    assert health.take_events() == []
    assert stats_of(health) == VendorStats(
        vendor="a",
        state=HealthState.HEALTHY,
        requests=0,
        success_rate=None,
        latency_p50=None,
        latency_p90=None,
        ejections=0,
        ejected_until=None,
        last_reason=None,
        consecutive_failures=0,
    )


def test_a_vendor_not_tracked_is_skipped_and_its_outcomes_ignored(clock: FakeClock) -> None:
    health = make(clock)
    assert health.admit("nobody") is None
    health.record("nobody", NORMAL, ACCEPTED, FAST)
    assert "nobody" not in health.availability()
    assert health.take_events() == []


def test_reconcile_keeps_history_of_kept_vendors_and_starts_new_ones_fresh(
    clock: FakeClock,
) -> None:
    health = Health(["a", "b", "c"], SETTINGS, clock=clock)
    for _ in range(SETTINGS.consecutive_failures):
        health.record("a", NORMAL, RETRIABLE, FAST)
        health.record("c", NORMAL, RETRIABLE, FAST)
    health.record("b", NORMAL, ACCEPTED, FAST)
    health.reconcile(["a", "b", "c", "d"], fresh=["c"])
    stats = {s.vendor: s for s in health.stats()}
    assert stats["a"].state is HealthState.EJECTED  # kept: still ejected
    assert stats["b"].requests == 1  # kept: its window too
    assert stats["c"].state is HealthState.HEALTHY and stats["c"].requests == 0  # fresh
    assert stats["d"].state is HealthState.HEALTHY and stats["d"].ejections == 0  # added
    health.reconcile(["b", "d"])
    assert list(health.availability()) == ["b", "d"]
    assert health.admit("a") is None  # removed: no new attempt goes there


def test_reconcile_applies_new_settings_to_kept_vendors(clock: FakeClock) -> None:
    health = Health(["a"], SETTINGS, clock=clock)
    health.record("a", NORMAL, RETRIABLE, FAST)
    health.reconcile(["a"], settings=replace(SETTINGS, consecutive_failures=2))
    health.record("a", NORMAL, RETRIABLE, FAST)  # the second in a row: now enough
    assert health.availability()["a"] is Availability.EJECTED


@pytest.mark.parametrize(
    "settings",
    [
        {"consecutive_failures": 0},
        {"window_seconds": 0.0},
        {"min_requests": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"latency_p90_seconds": 0.0},
        {"base_ejection_seconds": float("nan")},
        {"base_ejection_seconds": 60.0, "max_ejection_seconds": 30.0},
        {"max_window_samples": 0},
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthSettings(**settings)  # type: ignore[arg-type]


# --- ejection rules --------------------------------------------------------------------------


def test_consecutive_failures_eject(clock: FakeClock) -> None:
    health = make(clock)
    fail(health, 4)
    assert health.take_events() == []
    health.record("a", NORMAL, Outcome.AMBIGUOUS, FAST)
    assert health.take_events() == [
        Ejected(
            "a",
            EjectionReason.CONSECUTIVE_FAILURES,
            ejections=1,
            until=1030.0,
            detail="5 consecutive failures, last ambiguous",
        )
    ]
    assert health.take_events() == []
    assert health.availability() == {"a": Availability.EJECTED, "b": Availability.AVAILABLE}
    assert health.admit("a") is None


def test_a_success_breaks_the_run(clock: FakeClock) -> None:
    health = make(clock)
    fail(health, 4)
    succeed(health, 1)
    fail(health, 4)
    assert health.take_events() == []
    assert stats_of(health).consecutive_failures == 4


@pytest.mark.parametrize("outcome", [Outcome.RETRIABLE, Outcome.RATE_LIMITED, Outcome.AMBIGUOUS])
def test_every_provider_failure_counts(clock: FakeClock, outcome: Outcome) -> None:
    health = make(clock)
    fail(health, 5, outcome=outcome)
    assert [type(e) for e in health.take_events()] == [Ejected]


@pytest.mark.parametrize("outcome", [Outcome.ACCEPTED, Outcome.PERMANENT])
def test_accepted_and_permanent_never_eject(clock: FakeClock, outcome: Outcome) -> None:
    health = make(clock)
    for _ in range(500):
        health.record("a", NORMAL, outcome, FAST)
    assert health.take_events() == []
    assert stats_of(health).success_rate == 1.0


def test_permanent_outcome_resets_the_run(clock: FakeClock) -> None:
    health = make(clock)
    fail(health, 4)
    health.record("a", NORMAL, PERMANENT, FAST)
    fail(health, 4)
    assert health.take_events() == []


def test_vendor_config_ejects_at_once(clock: FakeClock) -> None:
    health = make(clock)
    succeed(health, 50)
    health.record("a", NORMAL, Outcome.VENDOR_CONFIG, FAST)
    assert health.take_events() == [
        Ejected("a", EjectionReason.VENDOR_CONFIG, 1, 1030.0, "vendor_config outcome")
    ]
    assert stats_of(health).last_reason == "vendor_config"


def test_failure_rate_needs_min_requests(clock: FakeClock) -> None:
    health = make(clock, consecutive_failures=100, min_requests=20, failure_rate=0.5)
    for _ in range(9):  # F S F S ... 18 samples, half failed, below min_requests
        fail(health, 1)
        succeed(health, 1)
    fail(health, 1)  # 19 samples, 10 failed
    assert health.take_events() == []
    succeed(health, 1)  # 20 samples, 10 failed: 50 % >= 50 %
    assert health.take_events() == [
        Ejected("a", EjectionReason.FAILURE_RATE, 1, 1030.0, "10 of 20 attempts failed in 30s")
    ]


def test_failure_rate_below_threshold_does_not_eject(clock: FakeClock) -> None:
    health = make(clock, consecutive_failures=100, min_requests=20, failure_rate=0.5)
    for _ in range(9):
        fail(health, 1)
        succeed(health, 1)
    succeed(health, 2)  # 9 of 20
    assert health.take_events() == []
    assert stats_of(health).success_rate == pytest.approx(0.55)


def test_slow_successes_eject(clock: FakeClock) -> None:
    health = make(clock)
    succeed(health, 18)
    succeed(health, 2, latency=SLOW)  # 2 of 20 slow: p90 is still fast
    assert health.take_events() == []
    assert stats_of(health).latency_p90 == FAST
    succeed(health, 1, latency=SLOW)  # 3 of 21 slow: more than 10 %
    assert health.take_events() == [
        Ejected(
            "a",
            EjectionReason.LATENCY,
            1,
            1030.0,
            "p90 latency above 2s: 3 of 21 attempts slower in 30s",
        )
    ]
    assert stats_of(health).latency_p90 == SLOW


def test_latency_rule_waits_for_min_requests(clock: FakeClock) -> None:
    health = make(clock)
    succeed(health, 19, latency=SLOW)
    assert health.take_events() == []
    succeed(health, 1, latency=SLOW)
    assert [e.reason for e in health.take_events() if isinstance(e, Ejected)] == [
        EjectionReason.LATENCY
    ]


def test_latency_at_the_threshold_is_not_slow(clock: FakeClock) -> None:
    health = make(clock, latency_p90_seconds=2.0)
    succeed(health, 100, latency=2.0)
    assert health.take_events() == []


def test_latency_rule_can_be_disabled(clock: FakeClock) -> None:
    health = make(clock, latency_p90_seconds=None)
    succeed(health, 100, latency=60.0)
    assert health.take_events() == []


@pytest.mark.parametrize("seed", range(40))
def test_latency_rule_agrees_with_reported_p90(seed: int) -> None:
    """The O(1) slow-count rule fires exactly when the sorted-window p90 crosses the threshold."""
    rng = random.Random(seed)
    health = Health(
        ["a"],
        HealthSettings(consecutive_failures=10**6, min_requests=20, failure_rate=1.0),
        FakeClock(),
    )
    slow_share = rng.uniform(0.03, 0.12)  # some seeds eject late, some never
    for requests in range(1, 401):
        latency = rng.uniform(2.0, 5.0) if rng.random() < slow_share else rng.uniform(0, 2.0)
        health.record("a", NORMAL, ACCEPTED, latency)
        ejected = bool(health.take_events())
        p90 = stats_of(health).latency_p90
        assert p90 is not None
        assert ejected == (requests >= 20 and p90 > 2.0), requests
        if ejected:
            break


# --- the window ------------------------------------------------------------------------------


def test_window_forgets_old_failures(clock: FakeClock) -> None:
    health = make(clock, consecutive_failures=100)
    fail(health, 15)
    succeed(health, 4)
    clock.advance(30.0)  # exactly the window: everything above is forgotten
    succeed(health, 1)
    assert health.take_events() == []
    assert stats_of(health).requests == 1


def test_window_keeps_recent_failures(clock: FakeClock) -> None:
    health = make(clock, consecutive_failures=100)
    fail(health, 15)
    succeed(health, 4)
    clock.advance(29.5)
    succeed(health, 1)  # 15 of 20 failed within the window
    assert [type(e) for e in health.take_events()] == [Ejected]


def test_stats_slide_the_window_too(clock: FakeClock) -> None:
    health = make(clock)
    succeed(health, 3)
    clock.advance(31.0)
    assert stats_of(health).requests == 0


def test_window_is_bounded_in_samples(clock: FakeClock) -> None:
    health = make(clock, consecutive_failures=100, min_requests=10, max_window_samples=10)
    fail(health, 3)
    succeed(health, 10)
    assert health.take_events() == []
    stats = stats_of(health)
    assert (stats.requests, stats.success_rate) == (10, 1.0)


# --- ejection time, half-open probes, decay --------------------------------------------------


def test_half_open_admits_one_probe_and_success_recovers(clock: FakeClock) -> None:
    health = make(clock)
    succeed(health, 10)
    eject_by_consecutive(health)
    clock.advance(29.0)
    assert health.admit("a") is None
    assert health.availability()["a"] is Availability.EJECTED
    clock.advance(1.0)
    assert health.availability()["a"] is Availability.PROBE
    assert health.admit("a") is PROBE
    assert health.admit("a") is None  # the probe is in flight
    assert health.availability()["a"] is Availability.EJECTED
    assert stats_of(health).state is HealthState.PROBING
    health.record("a", PROBE, ACCEPTED, FAST)
    assert health.take_events() == [ProbeAdmitted("a"), Recovered("a")]
    assert health.availability()["a"] is Availability.AVAILABLE
    assert health.admit("a") is NORMAL
    stats = stats_of(health)
    assert (stats.state, stats.requests, stats.consecutive_failures) == (HealthState.HEALTHY, 0, 0)
    assert (stats.ejections, stats.last_reason) == (1, "consecutive_failures")


def test_failed_probe_re_ejects_for_longer(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)  # until 1030
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    health.record("a", PROBE, RETRIABLE, 5.0)
    assert health.take_events() == [
        ProbeAdmitted("a"),
        Ejected(
            "a",
            EjectionReason.CONSECUTIVE_FAILURES,
            2,
            1090.0,
            "half-open probe failed: retriable",
        ),
    ]
    clock.advance(59.0)
    assert health.admit("a") is None


def test_probe_failing_on_vendor_config_says_so(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    health.record("a", PROBE, Outcome.VENDOR_CONFIG, FAST)
    events = health.take_events()
    assert events[-1] == Ejected(
        "a", EjectionReason.VENDOR_CONFIG, 2, 1090.0, "half-open probe failed: vendor_config"
    )


def test_unsupported_is_no_evidence_and_hands_the_probe_back(clock: FakeClock) -> None:
    health = make(clock)
    fail(health, 4)
    health.record("a", NORMAL, Outcome.UNSUPPORTED, FAST)
    assert stats_of(health).consecutive_failures == 4  # neither a success nor a failure
    assert stats_of(health).requests == 4
    fail(health, 1)
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    health.record("a", PROBE, Outcome.UNSUPPORTED, FAST)
    assert health.admit("a") is PROBE  # the slot came back at once
    assert health.take_events()[-2:] == [ProbeAdmitted("a"), ProbeAdmitted("a")]


def test_ejection_time_grows_and_is_capped(clock: FakeClock) -> None:
    health = make(clock, base_ejection_seconds=30.0, max_ejection_seconds=100.0)
    fail(health, 5)
    durations = []
    for _ in range(5):
        (event,) = (e for e in health.take_events() if isinstance(e, Ejected))
        durations.append((event.ejections, event.until - clock.now))
        clock.now = event.until
        assert health.admit("a") is PROBE
        fail(health, 1, admission=PROBE)
    assert durations == [(1, 30.0), (2, 60.0), (3, 90.0), (4, 100.0), (5, 100.0)]


def test_stuck_probe_is_replaced_after_the_base_ejection_time(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    clock.advance(30.0)
    assert health.admit("a") is PROBE  # this probe never reports back
    clock.advance(29.0)
    assert health.admit("a") is None
    assert health.availability()["a"] is Availability.EJECTED
    clock.advance(1.0)
    assert health.availability()["a"] is Availability.PROBE
    assert health.admit("a") is PROBE
    assert health.admit("a") is None
    assert health.take_events() == [ProbeAdmitted("a"), ProbeAdmitted("a")]


@pytest.mark.parametrize("outcome", [ACCEPTED, PERMANENT])
def test_slow_probe_re_ejects_for_latency_and_longer(clock: FakeClock, outcome: Outcome) -> None:
    health = make(clock)
    eject_by_consecutive(health)  # until 1030
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    health.record("a", PROBE, outcome, SLOW)  # answered, but late: still degraded
    assert health.take_events() == [
        ProbeAdmitted("a"),
        Ejected(
            "a",
            EjectionReason.LATENCY,
            2,
            1090.0,
            "half-open probe failed: 3s, slower than the threshold",
        ),
    ]
    stats = stats_of(health)
    assert (stats.state, stats.ejected_until, stats.last_reason) == (
        HealthState.EJECTED,
        1090.0,
        "latency",
    )
    clock.advance(59.0)
    assert health.admit("a") is None
    clock.advance(1.0)
    assert health.admit("a") is PROBE


@pytest.mark.parametrize("latency", [FAST, 2.0])  # at the threshold is not slow
def test_fast_probe_recovers_from_a_latency_ejection(clock: FakeClock, latency: float) -> None:
    health = make(clock)
    succeed(health, 20, latency=SLOW)
    assert [e.reason for e in health.take_events() if isinstance(e, Ejected)] == [
        EjectionReason.LATENCY
    ]
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    health.record("a", PROBE, ACCEPTED, latency)
    assert health.take_events() == [ProbeAdmitted("a"), Recovered("a")]
    stats = stats_of(health)
    assert (stats.state, stats.requests, stats.ejections, stats.last_reason) == (
        HealthState.HEALTHY,
        0,
        1,
        "latency",
    )
    assert health.admit("a") is NORMAL


def recover_after_ejection(health: Health, clock: FakeClock) -> None:
    eject_by_consecutive(health)
    clock.now = stats_of(health).ejected_until or 0.0
    assert health.admit("a") is PROBE
    succeed(health, 1, admission=PROBE)
    health.take_events()


def test_ejection_count_decays_after_a_healthy_period(clock: FakeClock) -> None:
    health = make(clock)
    recover_after_ejection(health, clock)
    clock.advance(300.0)  # healthy for max_ejection_seconds
    fail(health, 5)
    assert health.take_events() == [
        Ejected(
            "a",
            EjectionReason.CONSECUTIVE_FAILURES,
            1,
            clock.now + 30.0,
            "5 consecutive failures, last retriable",
        )
    ]


def test_stats_show_the_decayed_count(clock: FakeClock) -> None:
    health = make(clock)
    recover_after_ejection(health, clock)
    clock.advance(299.0)
    assert stats_of(health).ejections == 1
    clock.advance(1.0)
    assert stats_of(health).ejections == 0


def test_ejection_count_keeps_growing_while_flapping(clock: FakeClock) -> None:
    health = make(clock)
    recover_after_ejection(health, clock)
    clock.advance(299.0)
    fail(health, 5)
    (event,) = health.take_events()
    assert isinstance(event, Ejected)
    assert (event.ejections, event.until) == (2, clock.now + 60.0)


# --- panic traffic ---------------------------------------------------------------------------


def test_failure_while_ejected_does_not_extend_the_ejection(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    clock.advance(10.0)
    fail(health, 3, admission=PANIC)  # panic traffic, not admitted
    assert health.take_events() == []
    stats = stats_of(health)
    assert (stats.state, stats.ejected_until, stats.ejections) == (HealthState.EJECTED, 1030.0, 1)
    clock.advance(25.0)  # the ejection is over; still no probe was admitted
    fail(health, 1, admission=PANIC)
    assert health.take_events() == []
    assert health.availability()["a"] is Availability.PROBE


def test_panic_success_while_ejected_recovers(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    clock.advance(10.0)
    health.record("a", PANIC, PERMANENT, FAST)
    assert health.take_events() == [Recovered("a")]
    assert health.availability()["a"] is Availability.AVAILABLE
    assert stats_of(health).requests == 0


def test_panic_success_recovers_only_when_not_slow(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    clock.advance(10.0)
    succeed(health, 3, latency=SLOW, admission=PANIC)
    assert health.take_events() == []
    stats = stats_of(health)
    assert (stats.state, stats.ejected_until, stats.ejections) == (HealthState.EJECTED, 1030.0, 1)
    assert health.admit("a") is None
    health.record("a", PANIC, ACCEPTED, FAST)
    assert health.take_events() == [Recovered("a")]
    assert health.availability()["a"] is Availability.AVAILABLE
    assert health.admit("a") is NORMAL


def test_panic_success_during_a_probe_recovers_and_the_late_probe_feeds_the_rules(
    clock: FakeClock,
) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    succeed(health, 1, admission=PANIC)
    assert health.take_events() == [ProbeAdmitted("a"), Recovered("a")]
    fail(health, 1, admission=PROBE)  # the probe answers after the vendor recovered
    assert health.take_events() == []  # one failure: no rule fires yet
    stats = stats_of(health)
    assert (stats.state, stats.requests, stats.consecutive_failures) == (HealthState.HEALTHY, 1, 1)


# --- attempts in flight across an ejection ---------------------------------------------------


def test_slow_attempts_in_flight_at_a_latency_ejection_do_not_recover_it(
    clock: FakeClock,
) -> None:
    """The slow requests that caused a latency ejection complete after it: only samples."""
    health = make(clock)
    succeed(health, 17)
    assert [health.admit("a") for _ in range(8)] == [NORMAL] * 8
    succeed(health, 3, latency=SLOW)  # 3 of 20 slow
    assert health.take_events() == [
        Ejected(
            "a",
            EjectionReason.LATENCY,
            1,
            1030.0,
            "p90 latency above 2s: 3 of 20 attempts slower in 30s",
        )
    ]
    succeed(health, 5, latency=SLOW)  # the other 5 in flight succeed, as slowly
    assert health.take_events() == []
    stats = stats_of(health)
    assert (stats.state, stats.ejected_until, stats.ejections, stats.requests) == (
        HealthState.EJECTED,
        1030.0,
        1,
        25,
    )
    assert health.availability()["a"] is Availability.EJECTED
    assert health.admit("a") is None


@pytest.mark.parametrize("outcome", [RETRIABLE, Outcome.AMBIGUOUS, Outcome.VENDOR_CONFIG])
def test_stale_normal_failure_does_not_extend_the_ejection(
    clock: FakeClock, outcome: Outcome
) -> None:
    health = make(clock)
    assert [health.admit("a") for _ in range(6)] == [NORMAL] * 6
    fail(health, 5)
    assert health.take_events() == [
        Ejected(
            "a",
            EjectionReason.CONSECUTIVE_FAILURES,
            1,
            1030.0,
            "5 consecutive failures, last retriable",
        )
    ]
    clock.advance(10.0)
    fail(health, 1, outcome=outcome)  # the sixth comes back after the ejection
    assert health.take_events() == []
    stats = stats_of(health)
    assert (stats.state, stats.ejected_until, stats.ejections, stats.last_reason) == (
        HealthState.EJECTED,
        1030.0,
        1,
        "consecutive_failures",
    )
    assert stats.consecutive_failures == 6
    clock.advance(20.0)
    assert health.admit("a") is PROBE


@pytest.mark.parametrize("outcome", [ACCEPTED, RETRIABLE])
def test_stale_normal_outcome_does_not_decide_the_probe(clock: FakeClock, outcome: Outcome) -> None:
    health = make(clock)
    assert health.admit("a") is NORMAL  # sent while healthy, answers only during the probe
    eject_by_consecutive(health)
    clock.advance(30.0)
    assert health.admit("a") is PROBE
    health.record("a", NORMAL, outcome, FAST)
    assert health.take_events() == [ProbeAdmitted("a")]
    assert stats_of(health).state is HealthState.PROBING
    assert health.admit("a") is None
    health.record("a", PROBE, ACCEPTED, FAST)
    assert health.take_events() == [Recovered("a")]


# --- stats -----------------------------------------------------------------------------------


def test_stats_report_the_window(clock: FakeClock) -> None:
    health = make(clock)
    for latency in (0.5, 0.1, 0.3, 0.2, 0.4, 0.9, 0.7, 0.6, 0.8, 1.0):
        health.record("a", NORMAL, ACCEPTED, latency)
    fail(health, 2)  # at FAST = 0.1
    health.record("b", NORMAL, PERMANENT, 0.25)
    a, b = health.stats()
    assert a == VendorStats(
        vendor="a",
        state=HealthState.HEALTHY,
        requests=12,
        success_rate=10 / 12,
        latency_p50=0.4,  # 6th of 12 sorted: 0.1 0.1 0.1 0.2 0.3 0.4 ...
        latency_p90=0.9,  # 11th of 12
        ejections=0,
        ejected_until=None,
        last_reason=None,
        consecutive_failures=2,
    )
    assert (b.vendor, b.requests, b.success_rate, b.latency_p50, b.latency_p90) == (
        "b",
        1,
        1.0,
        0.25,
        0.25,
    )


def test_stats_of_an_ejected_vendor(clock: FakeClock) -> None:
    health = make(clock)
    eject_by_consecutive(health)
    stats = stats_of(health)
    assert (stats.state, stats.ejections, stats.ejected_until, stats.last_reason) == (
        HealthState.EJECTED,
        1,
        1030.0,
        "consecutive_failures",
    )
    assert (stats.requests, stats.success_rate, stats.consecutive_failures) == (5, 0.0, 5)


def test_vendors_are_independent(clock: FakeClock) -> None:
    health = make(clock)
    fail(health, 5, vendor="b")
    assert health.availability() == {"a": Availability.AVAILABLE, "b": Availability.EJECTED}
    assert [e.vendor for e in health.take_events()] == ["b"]
