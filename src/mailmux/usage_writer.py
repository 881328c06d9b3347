"""The day's usage counters between memory and the store: seeded at start, written behind.

`DailyUsage` decides in memory, per message, without waiting for a disk;
the store keeps the counts across restarts (a node restarted at noon still
knows what it sent this morning) and, as increments, lets several nodes add
to the same counters. Counts are written about once a second and at stop;
a write that fails is kept and retried with the next one, so a count is
never lost while the node runs (a crash loses at most the last second's).
"""

from __future__ import annotations

import asyncio
import logging

from mailmux.spool.base import Store
from mailmux.warmup import DailyUsage

log = logging.getLogger(__name__)


class UsageWriter:
    def __init__(self, usage: DailyUsage, store: Store, *, interval: float = 1.0) -> None:
        self.usage = usage
        self._store = store
        self._interval = interval

    async def load(self) -> None:
        """Add today's stored counts to `usage` (before the node sends anything)."""
        day = self.usage.today()
        self.usage.seed(day, await self._store.usage(day.isoformat()))

    async def flush(self) -> None:
        """Write the counts not yet stored; on failure keep them for the next flush and raise."""
        counts = self.usage.take_unflushed()
        if not counts:
            return
        try:
            await self._store.add_usage(counts)
        except BaseException:
            self.usage.restore_unflushed(counts)
            raise

    async def run(self) -> None:
        """Flush every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("writing the usage counters failed; retrying with the next flush")
