"""PoolShare: the part of a vendor's connection pool that attempts which can wait may hold.

A vendor sends at most `pool_size` requests at once (its HTTP connections or
SMTP sessions); a request beyond that waits for one to come free, in line.
Left alone, a drained backlog or a stream of bulk first attempts could hold
every connection, and an OTP's first attempt would queue behind them. So the
Deliverer asks a vendor's PoolShare before an attempt that is not urgent
(a retry, or a first attempt of the least urgent class): those hold at most
`pool_size - reserved_for_urgent(pool_size)` connections together, and the
rest is always free for urgent first attempts, which never ask.
"""

from __future__ import annotations

import asyncio
from typing import Final

#: The share of a pool kept for urgent first attempts (at least one connection).
URGENT_SHARE: Final = 0.1


def reserved_for_urgent(pool_size: int) -> int:
    """Connections kept back for urgent first attempts: a tenth, at least one of two or more.

    A pool of one is lent whole: keeping its only connection back would
    stop every attempt that can wait.
    """
    if pool_size < 2:
        return 0
    return max(1, int(pool_size * URGENT_SHARE))


class PoolShare:
    """How many of one vendor's connections the attempts that can wait hold, at most."""

    def __init__(self, pool_size: int) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size: must be ≥ 1, got {pool_size}")
        self.size = pool_size - reserved_for_urgent(pool_size)
        self._free = asyncio.Semaphore(self.size)
        #: Places taken now.
        self.held = 0

    async def hold(self, timeout: float) -> bool:
        """Take one place, waiting at most `timeout` seconds; whether it was taken.

        Without a wait (a place is free) this takes it without suspending.
        """
        if self._free.locked():
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._free.acquire()
            except TimeoutError:
                return False
        else:
            await self._free.acquire()
        self.held += 1
        return True

    def release(self) -> None:
        """Give back the place `hold` took, once the attempt's request is over."""
        self.held -= 1
        self._free.release()
