"""Prometheus metrics: what each vendor, message and request did, served at `/metrics`.

Every App owns a `Metrics` with its own `CollectorRegistry` (never the
process-wide default), so several Apps in one process, as in the tests, do
not collide. The hot path pays one dict lookup and one `inc()`/`observe()`
per event: every label child whose values are known when the App starts
(vendor and outcome, vendor and reason, shape) is bound then, and children
for open-ended labels (traffic class, HTTP status) are cached on first use.
No `.labels()` call runs per request once a value has been seen.

The gauges that describe a moment (vendor state and effective weight,
spool depth and oldest age) are not kept up to date on the hot path: the
vendor gauges are read from Health and the routes by a collector at scrape
time, and the spool gauges are set from one cheap store query just before
each scrape (`Metrics.scrape`).

A node with `metrics.enabled: false` gets `Recorder`, whose methods do
nothing: the hooks stay in place and cost a call each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mailmux.health import EjectionReason, Health, HealthState
from mailmux.routing import Route
from mailmux.spool.base import MessageState, Store
from mailmux.vendors.base import Outcome

#: The `shape` label of requests that came in on the native API or SMTP submission.
NATIVE_SHAPE = "native"
SMTP_SHAPE = "smtp"

#: Attempt latency buckets, in seconds: ESP APIs answer in tens to hundreds of ms.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Recorder:
    """Where the hot path reports events; this base records nothing (metrics off)."""

    enabled = False

    def add_vendors(self, vendors: Iterable[str]) -> None:
        """A reload added `vendors`: their series are bound now, off the hot path."""

    def attempt(self, vendor: str, outcome: Outcome, seconds: float) -> None:
        """One vendor attempt and how long it took."""

    def message(self, state: MessageState, traffic_class: str) -> None:
        """A message reached `state` (answered in it, or later moved to it by a retry)."""

    def ejection(self, vendor: str, reason: EjectionReason) -> None:
        """Health ejected `vendor`."""

    def request(self, shape: str, status: int | str) -> None:
        """One ingress request answered with `status` (HTTP code or SMTP reply code)."""

    def config_reload(self, result: str) -> None:
        """A config reload ended with `result` (`ok` or `invalid`)."""


NO_METRICS = Recorder()


class Metrics(Recorder):
    """One node's metrics, in its own registry."""

    enabled = True

    def __init__(
        self,
        vendors: Iterable[str],
        shapes: Sequence[str],
        *,
        health: Health,
        routes: Callable[[], Sequence[Route]],
    ) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        attempts = Counter(
            "mailmux_attempts",
            "Vendor attempts, by vendor and outcome.",
            ("vendor", "outcome"),
            registry=reg,
        )
        duration = Histogram(
            "mailmux_attempt_duration_seconds",
            "Time one vendor attempt took.",
            ("vendor",),
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        ejections = Counter(
            "mailmux_ejections",
            "Health ejections, by vendor and rule.",
            ("vendor", "reason"),
            registry=reg,
        )
        self._messages_family = Counter(
            "mailmux_messages",
            "Messages reaching each state (queued: spooled on the first try), by class.",
            ("state", "class"),
            registry=reg,
        )
        self._requests_family = Counter(
            "mailmux_ingress_requests",
            "Ingress requests, by shape (native, an ESP's name, smtp) and answer status.",
            ("shape", "status"),
            registry=reg,
        )
        self._reloads_family = Counter(
            "mailmux_config_reloads",
            "Config reloads, by result.",
            ("result",),
            registry=reg,
        )
        self.spool_depth = Gauge(
            "mailmux_spool_depth", "Messages queued in the spool for a retry.", registry=reg
        )
        self.spool_oldest_age = Gauge(
            "mailmux_spool_oldest_age_seconds",
            "Age of the oldest queued message (0 when none is queued).",
            registry=reg,
        )
        reg.register(_VendorCollector(health, routes))
        self._attempts_family, self._durations_family = attempts, duration
        self._ejections_family = ejections
        self._attempts: dict[str, dict[Outcome, Counter]] = {}
        self._durations: dict[str, Histogram] = {}
        self._ejections: dict[str, dict[EjectionReason, Counter]] = {}
        self.add_vendors(vendors)
        self._messages: dict[tuple[MessageState, str], Counter] = {}
        self._requests: dict[str, dict[int | str, Counter]] = {
            s: {} for s in (NATIVE_SHAPE, SMTP_SHAPE, *shapes)
        }

    def add_vendors(self, vendors: Iterable[str]) -> None:
        for v in vendors:
            if v in self._attempts:
                continue  # a vendor that was removed and came back keeps its series
            self._attempts[v] = {o: self._attempts_family.labels(v, o.value) for o in Outcome}
            self._durations[v] = self._durations_family.labels(v)
            self._ejections[v] = {
                r: self._ejections_family.labels(v, r.value) for r in EjectionReason
            }

    def attempt(self, vendor: str, outcome: Outcome, seconds: float) -> None:
        self._attempts[vendor][outcome].inc()
        self._durations[vendor].observe(seconds)

    def message(self, state: MessageState, traffic_class: str) -> None:
        key = (state, traffic_class)
        child = self._messages.get(key)
        if child is None:
            child = self._messages[key] = self._messages_family.labels(state.value, traffic_class)
        child.inc()

    def ejection(self, vendor: str, reason: EjectionReason) -> None:
        self._ejections[vendor][reason].inc()

    def request(self, shape: str, status: int | str) -> None:
        by_status = self._requests[shape]
        child = by_status.get(status)
        if child is None:
            child = by_status[status] = self._requests_family.labels(shape, str(status))
        child.inc()

    def config_reload(self, result: str) -> None:
        self._reloads_family.labels(result).inc()  # rare: no cached child needed

    async def scrape(self, store: Store) -> bytes:
        """The text exposition, with the spool gauges read from `store` first."""
        depth, oldest = await store.queue_summary()
        self.spool_depth.set(depth)
        self.spool_oldest_age.set(0.0 if oldest is None else max(0.0, time.time() - oldest))
        return generate_latest(self.registry)


class _VendorCollector(Collector):
    """`mailmux_vendor_state` and `mailmux_vendor_effective_weight`, read at scrape time.

    State is one series per vendor and state, 1 for the state the vendor is
    in and 0 for the others (the usual Prometheus encoding of an enum), so
    `mailmux_vendor_state{state="ejected"} == 1` selects ejected vendors.
    The effective weight is the route's weight after overrides, 0 when the
    vendor is drained; health does not change it.
    """

    def __init__(self, health: Health, routes: Callable[[], Sequence[Route]]) -> None:
        self._health = health
        self._routes = routes

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "mailmux_vendor_state",
            "1 for the health state each vendor is in, 0 for the others.",
            labels=("vendor", "state"),
        )
        for stats in self._health.stats():
            for s in HealthState:
                state.add_metric((stats.vendor, s.value), 1.0 if stats.state is s else 0.0)
        weight = GaugeMetricFamily(
            "mailmux_vendor_effective_weight",
            "Each vendor's routing weight after overrides (0 when drained).",
            labels=("vendor",),
        )
        for route in self._routes():
            weight.add_metric((route.vendor,), 0.0 if route.drained else route.weight)
        return (state, weight)
