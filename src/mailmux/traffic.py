"""Messages each vendor accepted, per second, over the last 15 minutes: the dashboard's chart.

The Deliverer calls `TrafficHistory.sent(vendor)` once per accepted attempt,
on the hot path, so it costs one clock read, one dict look-up and two list
indexes: each vendor has a ring of `WINDOW` slots, slot `second % WINDOW`,
and beside each count the second it belongs to. A slot last written a whole
window ago (or never) is stale: the first write of a new second resets it,
and a read treats it as 0, so seconds without traffic need no writing at
all and nothing runs in the background.

The clock is wall time (epoch seconds, injected), because the chart's axis
is wall time and the browser reads the seconds as instants.

It is not shared between nodes: each node charts what it delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

#: Seconds of history kept: 15 minutes.
WINDOW = 900


class _Ring:
    """One vendor's counts: `counts[i]` is valid for second `seconds[i]` only."""

    __slots__ = ("counts", "seconds")

    def __init__(self, window: int) -> None:
        self.counts = [0] * window
        self.seconds = [-1] * window


class TrafficHistory:
    """Per vendor, ACCEPTED attempts per whole second for the last `window` seconds."""

    def __init__(
        self,
        vendors: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        window: int = WINDOW,
    ) -> None:
        self.window = window
        self._clock = clock
        self._rings = {name: _Ring(window) for name in vendors}
        #: The first second counted: before it nothing is known, so nothing is charted.
        self.started = int(clock())

    @property
    def vendors(self) -> list[str]:
        return list(self._rings)

    def sent(self, vendor: str) -> None:
        """`vendor` accepted one message now (a vendor not charted is ignored)."""
        ring = self._rings.get(vendor)
        if ring is None:
            return
        second = int(self._clock())
        slot = second % self.window
        if ring.seconds[slot] == second:
            ring.counts[slot] += 1
        else:
            ring.seconds[slot] = second
            ring.counts[slot] = 1

    def series(self, now: float, since: int | None = None) -> tuple[int, dict[str, list[int]]]:
        """`(start, {vendor: counts})`: the completed seconds `start`, `start + 1`, ...

        They run up to the second before `now` (the current one is still
        counting) and reach back at most `window` seconds, and not before
        this history started, or to `since` when that is later (a live view
        asks only for what it has not seen).
        """
        end = int(now)
        start = min(max(end - self.window, self.started, since or 0), end)
        window = self.window
        out: dict[str, list[int]] = {}
        for name, ring in self._rings.items():
            counts, seconds = ring.counts, ring.seconds
            out[name] = [
                counts[s % window] if seconds[s % window] == s else 0 for s in range(start, end)
            ]
        return start, out

    def reconcile(self, vendors: Iterable[str]) -> None:
        """Chart exactly `vendors` (after a reload): kept ones keep their history."""
        self._rings = {name: self._rings.get(name) or _Ring(self.window) for name in vendors}
