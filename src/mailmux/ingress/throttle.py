"""A log that a client cannot fill: at most a few lines per interval, then a count.

The HTTP server logs what clients do wrong (malformed requests, stalled
connections, connections over the cap). Every such line is triggered from
outside, so a client could write the log at the rate it sends bytes. Here a
fixed window lets `lines` lines through per `interval` seconds; the rest are
counted, and when the window ends one line says how many were left out.

    throttle = ThrottledLog(logging.getLogger("mailmux.server"), lines=20, interval=60.0,
                            call_later=loop.call_later)
    throttle.log(logging.WARNING, "bad request from %s: %s", peer, "bad header line")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

#: Schedules a call after a delay in seconds, like `loop.call_later`.
CallLater = Callable[[float, Callable[[], None]], Any]


class ThrottledLog:
    """Passes at most `lines` records per `interval` to `logger`, then one summary."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        lines: int,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        if lines < 1 or interval <= 0:
            raise ValueError("a throttle needs lines >= 1 and interval > 0")
        self.logger = logger
        self._lines = lines
        self._interval = interval
        self._clock = clock
        self._call_later = call_later
        self._window_end = 0.0
        self._passed = 0
        self._suppressed = 0
        self._summary_scheduled = False

    @property
    def suppressed(self) -> int:
        """Lines left out in the current window, not yet reported."""
        return self._suppressed

    def log(self, level: int, msg: str, *args: object, exc_info: Any = None) -> None:
        """Log one line if the window has room; a level that is off costs nothing."""
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + self._interval
            self._passed = 0
        if self._passed < self._lines:
            self._passed += 1
            self.logger.log(level, msg, *args, exc_info=exc_info)
            return
        self._suppressed += 1
        if self._call_later is not None and not self._summary_scheduled:
            self._summary_scheduled = True
            self._call_later(max(0.0, self._window_end - now), self._window_ended)

    def flush(self) -> None:
        """Report the lines left out so far, if any (also called when the server stops)."""
        if self._suppressed:
            self.logger.warning(
                "lines like the above left out: %d (at most %d every %g s)",
                self._suppressed,
                self._lines,
                self._interval,
            )
            self._suppressed = 0

    def _window_ended(self) -> None:
        self._summary_scheduled = False
        self.flush()
