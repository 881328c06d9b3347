"""When to try a spooled message again: exponential back-off with full jitter.

Full jitter (a uniform draw over the whole exponential window) spreads the
retries of a large backlog so that a recovering vendor is not hit by all of
them at once; a vendor's Retry-After is a floor, since sending earlier only
earns another 429.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmux.routing import RandomSource


@dataclass(frozen=True, slots=True)
class Backoff:
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempts: int, rng: RandomSource, retry_after: float | None = None) -> float:
        """Seconds to wait after `attempts` failed attempts (≥ 1)."""
        exponent = min(max(attempts - 1, 0), 62)
        window = min(self.max_delay, self.base_delay * (2.0**exponent))
        delay = rng.random() * window
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_delay)
