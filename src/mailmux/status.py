"""The status report behind `GET /v1/health` and `mailmux status`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from mailmux.health import Health, HealthState, VendorStats
from mailmux.routing import Route
from mailmux.spool.base import MessageState


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _vendor_json(
    route: Route, kind: str, stats: VendorStats, wall_offset: float, last_error: str | None
) -> dict[str, Any]:
    until = stats.ejected_until
    return {
        "name": route.vendor,
        "kind": kind,
        "weight": route.weight,
        "fallback": route.fallback,
        "drained": route.drained,
        "state": stats.state.name.lower(),
        "requests": stats.requests,
        "success_rate": stats.success_rate,
        "latency_p50_ms": _ms(stats.latency_p50),
        "latency_p90_ms": _ms(stats.latency_p90),
        "consecutive_failures": stats.consecutive_failures,
        "ejections": stats.ejections,
        # Health runs on the monotonic clock; report wall-clock instants.
        "ejected_until": None if until is None else until + wall_offset,
        "last_reason": stats.last_reason,  # why it was last ejected
        "last_error": last_error,  # its latest failure, in the ESP's own words
    }


def build_status(
    routes: Sequence[Route],
    kinds: Mapping[str, str],
    health: Health,
    spool_counts: Mapping[MessageState, int],
    last_errors: Mapping[str, str],
) -> dict[str, Any]:
    """`status` is "ok", "degraded" (some vendor ejected) or "panic" (all ejected)."""
    wall_offset = time.time() - time.monotonic()
    stats = {s.vendor: s for s in health.stats()}
    vendors = [
        _vendor_json(
            route,
            kinds[route.vendor],
            stats[route.vendor],
            wall_offset,
            last_errors.get(route.vendor),
        )
        for route in routes
    ]
    ejected = [v for v in vendors if v["state"] != HealthState.HEALTHY.name.lower()]
    if not ejected:
        overall = "ok"
    elif len(ejected) == len(vendors):
        overall = "panic"
    else:
        overall = "degraded"
    return {
        "status": overall,
        "vendors": vendors,
        "spool": {state.value: spool_counts.get(state, 0) for state in MessageState},
    }
