"""The Retrier: drains the spool.

It leases due messages in batches (a lease keeps two workers, or two nodes,
off the same message; a crashed worker's leases run out and are taken over)
and hands each one to the Deliverer, which decides whether it is sent,
failed, expired or scheduled again with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailmux.delivery import Deliverer
from mailmux.spool.base import Leased, Store

log = logging.getLogger("mailmux.retry")


@dataclass(frozen=True, slots=True)
class RetrierSettings:
    poll_interval: float = 1.0
    lease_seconds: float = 60.0
    batch_size: int = 100
    concurrency: int = 50


class Retrier:
    """Runs until cancelled, looking at the spool every `poll_interval`."""

    def __init__(
        self,
        deliverer: Deliverer,
        store: Store,
        settings: RetrierSettings,
        *,
        owner: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._deliverer = deliverer
        self._store = store
        self._settings = settings
        self._owner = owner
        self._wall = wall_clock
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def run_once(self) -> int:
        """Lease one batch of due messages and retry them all; returns how many."""
        batch = await self._store.lease_due(
            now=self._wall(),
            owner=self._owner,
            lease_seconds=self._settings.lease_seconds,
            limit=self._settings.batch_size,
        )
        if batch:
            await asyncio.gather(*(self._retry(leased) for leased in batch))
        return len(batch)

    async def run(self) -> None:
        """Forever: drain what is due, then wait for the next poll."""
        released = await self._store.release_leases(self._owner)
        if released:
            log.info("reclaimed %d leases this node held before it restarted", released)
        while True:
            try:
                leased = await self.run_once()
            except Exception:
                log.exception("retry pass failed; trying again after the poll interval")
                leased = 0
            if leased < self._settings.batch_size:  # a full batch: more may be due at once
                await asyncio.sleep(self._settings.poll_interval)

    async def _retry(self, leased: Leased) -> None:
        async with self._slots:
            try:
                await self._deliverer.redeliver(leased, self._owner)
            except Exception:
                # The lease runs out and the message is retried later; nothing is lost.
                log.exception("retry of %s failed; it stays in the spool", leased.record.id)
