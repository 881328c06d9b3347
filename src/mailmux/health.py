"""Per-vendor outlier detection, in Envoy's terms: passive health from real attempts.

Every attempt's outcome and latency is fed to `Health.record`. A vendor is
*ejected* (taken out of routing) when it fails `consecutive_failures` times in
a row, when its failure rate over the sliding window reaches `failure_rate`, or
when its p90 latency over the window exceeds `latency_p90_seconds`. The last
rule exists because of the incident that motivated mailmux: a vendor that
still answers, only slowly, is degraded, and mail stuck behind it is as late
as mail that was never sent. A VENDOR_CONFIG outcome (bad credentials,
unverified sender) ejects at once: no amount of retrying fixes it.

Only outcomes in `COUNTS_AGAINST_HEALTH` are failures. A PERMANENT outcome is
a bad message or recipient, never the vendor's fault, so it counts as a
success. An UNSUPPORTED outcome sent nothing and is not evidence at all.

States and transitions (each transition emits an event, see `take_events`):

    HEALTHY --rule fires--> EJECTED                         Ejected
    EJECTED --admit() after the ejection time--> PROBING    ProbeAdmitted
    PROBING --probe succeeds--> HEALTHY                     Recovered
    PROBING --probe fails or is slow--> EJECTED (count + 1) Ejected
    EJECTED --panic attempt succeeds, not slow--> HEALTHY   Recovered

- Every attempt carries the `Admission` it was sent under, and only that
  decides what its outcome may change: a NORMAL attempt still in flight when
  its vendor was ejected comes back to a vendor that is no longer HEALTHY,
  and then it is only a sample (otherwise the slow requests that caused a
  latency ejection would recover the vendor as they complete).
- Ejection time is `base_ejection_seconds` * the ejection count (this
  ejection included), capped at `max_ejection_seconds`.
- The ejection count goes back to 0 once the vendor has stayed healthy for
  `max_ejection_seconds` after recovering, so a vendor that failed once last
  week is not punished like one that is flapping now (Envoy likewise decays
  the multiplier while a host stays healthy).
- Half-open: once the ejection time is over, `admit` lets exactly one probe
  through. A probe that fails, or that succeeds slower than the latency
  threshold (a degraded vendor answers, only late), ejects again. If its
  outcome never comes back (the caller crashed), `admit` lets another probe
  through `base_ejection_seconds` after the first, so the vendor cannot stay
  stuck half-open.
- Panic: when every vendor is ejected the router sends to ejected vendors
  anyway, under `Admission.PANIC`. A success that is not slow recovers the
  vendor; a failure leaves its ejection as it was, so that panic traffic does
  not keep extending it.

The state machine is pure: no I/O and no threads; the clock is injected.
Each record is O(1): the window keeps running counts of failures and of
samples slower than the latency threshold, so no sorting happens per record.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum

from mailmux.routing import Availability
from mailmux.vendors.base import COUNTS_AGAINST_HEALTH, Outcome


class Admission(Enum):
    """Under what terms an attempt was sent; `record` needs it back."""

    NORMAL = "normal"  # the vendor was healthy
    PROBE = "probe"  # the one half-open probe: its outcome decides
    PANIC = "panic"  # every vendor ejected: sent anyway by the router's panic rule


class HealthState(Enum):
    """Where one vendor stands."""

    HEALTHY = "healthy"  # routed normally; every rule is watched.
    EJECTED = "ejected"  # out of routing until the ejection time is over.
    PROBING = "probing"  # half-open: one probe is in flight and decides the next state.


class EjectionReason(StrEnum):
    CONSECUTIVE_FAILURES = "consecutive_failures"  # includes a failed half-open probe
    FAILURE_RATE = "failure_rate"
    LATENCY = "latency"
    VENDOR_CONFIG = "vendor_config"


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Outlier detection thresholds; the defaults suit a vendor sending a few mails a second."""

    consecutive_failures: int = 5
    window_seconds: float = 30.0
    min_requests: int = 20  # failure-rate and latency rules need this many in the window
    failure_rate: float = 0.5  # eject when failures/requests in window >= this
    latency_p90_seconds: float | None = 2.0  # eject when window p90 exceeds it; None disables
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    max_window_samples: int = 10_000  # memory bound for the window

    def __post_init__(self) -> None:
        problems = []
        if self.consecutive_failures < 1:
            problems.append("consecutive_failures must be >= 1")
        if not self.window_seconds > 0:
            problems.append("window_seconds must be > 0")
        if self.min_requests < 1:
            problems.append("min_requests must be >= 1")
        if not 0 < self.failure_rate <= 1:
            problems.append("failure_rate must be in (0, 1]")
        if self.latency_p90_seconds is not None and not self.latency_p90_seconds > 0:
            problems.append("latency_p90_seconds must be > 0 or None")
        if not self.base_ejection_seconds > 0:
            problems.append("base_ejection_seconds must be > 0")
        if not self.max_ejection_seconds >= self.base_ejection_seconds:
            problems.append("max_ejection_seconds must be >= base_ejection_seconds")
        if self.max_window_samples < 1:
            problems.append("max_window_samples must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Ejected:
    vendor: str
    reason: EjectionReason
    ejections: int  # the ejection count, this ejection included
    until: float  # clock time when a probe may be admitted
    detail: str


@dataclass(frozen=True, slots=True)
class ProbeAdmitted:
    vendor: str


@dataclass(frozen=True, slots=True)
class Recovered:
    vendor: str


HealthEvent = Ejected | ProbeAdmitted | Recovered


@dataclass(frozen=True, slots=True)
class VendorStats:
    """One vendor's health for `mailmux status` and `GET /v1/health`."""

    vendor: str
    state: HealthState
    requests: int  # attempts in the window
    success_rate: float | None  # None without requests
    latency_p50: float | None
    latency_p90: float | None
    ejections: int
    ejected_until: float | None  # None while healthy
    last_reason: str | None  # reason of the latest ejection, kept after recovery
    consecutive_failures: int


class _Vendor:
    """Mutable per-vendor bookkeeping; only Health touches it."""

    __slots__ = (
        "consecutive",
        "ejected_until",
        "ejections",
        "failures",
        "healthy_since",
        "last_reason",
        "name",
        "probe_expires",
        "samples",
        "slow",
        "state",
    )

    def __init__(self, name: str, now: float) -> None:
        self.name = name
        self.state = HealthState.HEALTHY
        # (time, latency, failed, slow) per attempt, oldest first.
        self.samples: deque[tuple[float, float, bool, bool]] = deque()
        self.failures = 0  # failed samples in `samples`
        self.slow = 0  # samples in `samples` slower than the latency threshold
        self.consecutive = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.probe_expires = 0.0
        self.healthy_since = now
        self.last_reason: str | None = None

    def clear_window(self) -> None:
        self.samples.clear()
        self.failures = 0
        self.slow = 0
        self.consecutive = 0


class Health:
    """Outlier detection for a fixed set of vendors; see the module docstring."""

    def __init__(
        self,
        vendors: Iterable[str],
        settings: HealthSettings = HealthSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        now = clock()
        self._vendors = {name: _Vendor(name, now) for name in vendors}
        self._events: list[HealthEvent] = []
        self._p90: dict[str, tuple[float, float | None]] = {}  # vendor → (computed at, p90)

    def reconcile(
        self,
        vendors: Iterable[str],
        fresh: Iterable[str] = (),
        settings: HealthSettings | None = None,
    ) -> None:
        """Track exactly `vendors` from now on (a config reload).

        A vendor already tracked keeps its state and window, unless it is in
        `fresh` (its connection changed: the old evidence is about another
        endpoint); a new one starts healthy. A vendor no longer listed is
        forgotten: an attempt still under way to it is recorded nowhere, and
        `admit` skips it. New `settings` apply to every vendor at its next
        attempt; the windows are kept.
        """
        if settings is not None:
            self._settings = settings
        now = self._clock()
        restart = set(fresh)
        self._vendors = {
            name: (
                self._vendors[name]
                if name in self._vendors and name not in restart
                else _Vendor(name, now)
            )
            for name in vendors
        }

    def availability(self) -> dict[str, Availability]:
        """A snapshot for the router.

        An ejected vendor whose ejection is over reports PROBE, and so does a
        probing vendor whose probe has outlived its timeout; a vendor with a
        probe in flight reports EJECTED, since only the probe may go there.
        """
        now = self._clock()
        snapshot: dict[str, Availability] = {}
        for name, v in self._vendors.items():
            if v.state is HealthState.HEALTHY:
                snapshot[name] = Availability.AVAILABLE
            elif v.state is HealthState.EJECTED:
                expired = now >= v.ejected_until
                snapshot[name] = Availability.PROBE if expired else Availability.EJECTED
            else:
                expired = now >= v.probe_expires
                snapshot[name] = Availability.PROBE if expired else Availability.EJECTED
        return snapshot

    def admit(self, vendor: str) -> Admission | None:
        """May an attempt go to `vendor` now, and as what? None: skip this vendor.

        Admitting a probe moves the vendor to PROBING. A vendor a reload
        removed is skipped.
        """
        v = self._vendors.get(vendor)
        if v is None:
            return None
        if v.state is HealthState.HEALTHY:
            return Admission.NORMAL
        now = self._clock()
        if v.state is HealthState.EJECTED and now < v.ejected_until:
            return None
        if v.state is HealthState.PROBING and now < v.probe_expires:
            return None
        v.state = HealthState.PROBING
        v.probe_expires = now + self._settings.base_ejection_seconds
        self._events.append(ProbeAdmitted(vendor))
        return Admission.PROBE

    def record(self, vendor: str, admission: Admission, outcome: Outcome, latency: float) -> None:
        """Feed one attempt's outcome and latency (seconds), with the admission it went under."""
        v = self._vendors.get(vendor)
        if v is None:  # removed by a reload while the attempt was under way
            return
        if outcome is Outcome.UNSUPPORTED:  # nothing was sent: no evidence either way
            self.skip(vendor, admission)
            return
        now = self._clock()
        failed = outcome in COUNTS_AGAINST_HEALTH
        slow = self._add_sample(v, now, latency, failed)
        if failed:
            v.consecutive += 1
        else:
            v.consecutive = 0

        if v.state is HealthState.HEALTHY:
            # Whatever it was sent as, an outcome from a healthy vendor is current evidence.
            self._check_rules(v, now, outcome)
        elif admission is Admission.PROBE and v.state is HealthState.PROBING:
            if failed or slow:
                reason = EjectionReason.CONSECUTIVE_FAILURES
                if outcome is Outcome.VENDOR_CONFIG:
                    reason = EjectionReason.VENDOR_CONFIG
                elif not failed:
                    reason = EjectionReason.LATENCY
                what = outcome.value if failed else f"{latency:.3g}s, slower than the threshold"
                self._eject(v, now, reason, f"half-open probe failed: {what}")
            else:
                self._recover(v, now)
        elif admission is Admission.PANIC and not failed and not slow:
            self._recover(v, now)
        # Otherwise: a stale NORMAL attempt, or a failure under panic: only a sample.

    def skip(self, vendor: str, admission: Admission) -> None:
        """An attempt that says nothing of the vendor's health (nothing was sent, or the ESP
        throttled it with a retry-after, which the Limiter takes over): a probe slot it held
        is handed back (the ejection is already over, so the next admit probes again)."""
        v = self._vendors.get(vendor)
        if v is not None and admission is Admission.PROBE and v.state is HealthState.PROBING:
            v.state = HealthState.EJECTED

    def stats(self) -> list[VendorStats]:
        now = self._clock()
        result = []
        for v in self._vendors.values():
            self._slide(v, now)
            self._decay(v, now)
            n = len(v.samples)
            latencies = sorted(sample[1] for sample in v.samples)
            result.append(
                VendorStats(
                    vendor=v.name,
                    state=v.state,
                    requests=n,
                    success_rate=(n - v.failures) / n if n else None,
                    latency_p50=_nearest_rank(latencies, 50),
                    latency_p90=_nearest_rank(latencies, 90),
                    ejections=v.ejections,
                    ejected_until=None if v.state is HealthState.HEALTHY else v.ejected_until,
                    last_reason=v.last_reason,
                    consecutive_failures=v.consecutive,
                )
            )
        return result

    def recent_p90(self, vendor: str) -> float | None:
        """The vendor's p90 latency over the window (None without samples), for a hedge delay.

        Sorting the window costs O(n log n), so a value is reused for up to
        a second: a hedge delay needs a recent figure, not an exact one.
        """
        now = self._clock()
        cached = self._p90.get(vendor)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        v = self._vendors.get(vendor)
        if v is None:
            return None
        self._slide(v, now)
        p90 = _nearest_rank(sorted(sample[1] for sample in v.samples), 90)
        self._p90[vendor] = (now, p90)
        return p90

    def take_events(self) -> list[HealthEvent]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def _add_sample(self, v: _Vendor, now: float, latency: float, failed: bool) -> bool:
        """Add one attempt to the window; returns whether it was slow."""
        threshold = self._settings.latency_p90_seconds
        slow = threshold is not None and latency > threshold
        v.samples.append((now, latency, failed, slow))
        v.failures += failed
        v.slow += slow
        if len(v.samples) > self._settings.max_window_samples:
            self._drop_oldest(v)
        self._slide(v, now)
        return slow

    def _slide(self, v: _Vendor, now: float) -> None:
        """Forget samples at or beyond `window_seconds` old."""
        horizon = now - self._settings.window_seconds
        while v.samples and v.samples[0][0] <= horizon:
            self._drop_oldest(v)

    @staticmethod
    def _drop_oldest(v: _Vendor) -> None:
        _, _, failed, slow = v.samples.popleft()
        v.failures -= failed
        v.slow -= slow

    def _check_rules(self, v: _Vendor, now: float, outcome: Outcome) -> None:
        s = self._settings
        n = len(v.samples)
        if outcome is Outcome.VENDOR_CONFIG:
            self._eject(v, now, EjectionReason.VENDOR_CONFIG, "vendor_config outcome")
        elif v.consecutive >= s.consecutive_failures:
            self._eject(
                v,
                now,
                EjectionReason.CONSECUTIVE_FAILURES,
                f"{v.consecutive} consecutive failures, last {outcome.value}",
            )
        elif n < s.min_requests:
            return
        elif v.failures / n >= s.failure_rate:
            self._eject(
                v,
                now,
                EjectionReason.FAILURE_RATE,
                f"{v.failures} of {n} attempts failed in {s.window_seconds:g}s",
            )
        # p90 > T exactly when more than 10 % of the samples are slower than T
        # (nearest-rank p90, as `stats` reports it).
        elif v.slow * 10 > n:
            self._eject(
                v,
                now,
                EjectionReason.LATENCY,
                f"p90 latency above {s.latency_p90_seconds:g}s: "
                f"{v.slow} of {n} attempts slower in {s.window_seconds:g}s",
            )

    def _eject(self, v: _Vendor, now: float, reason: EjectionReason, detail: str) -> None:
        s = self._settings
        self._decay(v, now)
        v.ejections += 1
        duration = min(s.base_ejection_seconds * v.ejections, s.max_ejection_seconds)
        v.state = HealthState.EJECTED
        v.ejected_until = now + duration
        v.last_reason = reason.value
        self._events.append(Ejected(v.name, reason, v.ejections, v.ejected_until, detail))

    def _recover(self, v: _Vendor, now: float) -> None:
        v.state = HealthState.HEALTHY
        v.healthy_since = now
        v.clear_window()
        self._events.append(Recovered(v.name))

    def _decay(self, v: _Vendor, now: float) -> None:
        """Reset the ejection count after `max_ejection_seconds` of health since recovery."""
        if (
            v.state is HealthState.HEALTHY
            and now - v.healthy_since >= self._settings.max_ejection_seconds
        ):
            v.ejections = 0


def _nearest_rank(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank percentile: the smallest sample with `percent` % of samples at or below.

    Integer arithmetic keeps ranks exact (0.9 * 70 is 63.00000000000001 in floats).
    """
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)  # ceil(percent * n / 100), at least 1
    return ordered[max(rank, 1) - 1]
