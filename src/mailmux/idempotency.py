"""Idempotency keys: the same key within the retention window sends nothing new.

Concurrent requests with one key share the first one's result (an in-process
map of in-flight keys); later ones are answered from a small cache, then from
the store, so a retrying client gets the original receipt back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mailmux.receipts import Receipt
from mailmux.spool.base import TERMINAL_STATES, Store


class IdempotencyGuard:
    def __init__(
        self,
        store: Store,
        *,
        retention: float,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retention = retention
        self._cache_size = cache_size
        self._clock = clock
        self._in_flight: dict[str, asyncio.Future[Receipt]] = {}
        self._recent: OrderedDict[str, tuple[float, Receipt]] = OrderedDict()

    async def run(
        self, key: str, deliver: Callable[[], Awaitable[Receipt]]
    ) -> tuple[Receipt, bool]:
        """The receipt for `key`, and whether it is a replay of an earlier request."""
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        since = self._clock() - self._retention
        cached = self._recent.get(key)
        # Only terminal receipts are served from memory: a queued one may have moved on.
        if cached is not None and cached[0] >= since and cached[1].state in TERMINAL_STATES:
            return cached[1], True
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            record = await self._store.find_by_idempotency_key(key, since=since)
            if record is not None:
                receipt, replayed = Receipt.from_record(record), True
                created = record.created_at
            else:
                receipt, replayed = await deliver(), False
                created = self._clock()
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # mark retrieved: waiters, if any, get it through shield
            raise
        finally:
            self._in_flight.pop(key, None)
        future.set_result(receipt)
        self._remember(key, created, receipt)
        return receipt, replayed

    def _remember(self, key: str, created: float, receipt: Receipt) -> None:
        self._recent[key] = (created, receipt)
        self._recent.move_to_end(key)
        while len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)
