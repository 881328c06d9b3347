"""Idempotency keys: the same key within the retention window sends nothing new.

A replay is answered with the first answer (the receipt as it was then, so a
message first answered `queued` replays as `queued` with 202 even after it
was sent; `GET /v1/messages/{id}` tells where it is now). A key is bound to
the request that first carried it: the ingress passes a hash of that request,
and a later request with the same key but another hash is refused with
`IdempotencyKeyReused` rather than answered for a message it did not ask for
(Stripe's rule).

Concurrent requests with one key share the first one's result (an in-process
map of in-flight keys); later ones are answered from a small cache, then from
the store, so a retrying client gets the original receipt back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from mailmux.receipts import Receipt
from mailmux.spool.base import Store


class IdempotencyKeyReused(Exception):
    """The key was first used with a different request; nothing is sent or replayed."""


class _Remembered(NamedTuple):
    created: float
    request_hash: str
    receipt: Receipt  # the first answer


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
        self._in_flight: dict[str, tuple[str, asyncio.Future[Receipt]]] = {}
        self._recent: OrderedDict[str, _Remembered] = OrderedDict()

    async def run(
        self, key: str, request_hash: str, deliver: Callable[[], Awaitable[Receipt]]
    ) -> tuple[Receipt, bool]:
        """The receipt for `key`, and whether it is a replay of an earlier request.

        `request_hash` identifies the request (the ingress hashes what it
        received); `deliver` must store it with the message. Raises
        IdempotencyKeyReused if `key` belongs to a request with another hash.
        """
        pending = self._in_flight.get(key)
        if pending is not None:
            _check_same(pending[0], request_hash)
            return await asyncio.shield(pending[1]), True
        since = self._clock() - self._retention
        cached = self._recent.get(key)
        if cached is not None and cached.created >= since:
            _check_same(cached.request_hash, request_hash)
            return cached.receipt, True
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = (request_hash, future)
        try:
            record = await self._store.find_by_idempotency_key(key, since=since)
            if record is not None:
                _check_same(record.request_hash or request_hash, request_hash)
                receipt, replayed = Receipt.first_answer(record), True
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
        self._remember(key, _Remembered(created, request_hash, receipt))
        return receipt, replayed

    def _remember(self, key: str, entry: _Remembered) -> None:
        self._recent[key] = entry
        self._recent.move_to_end(key)
        while len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)


def _check_same(first: str, given: str) -> None:
    if first != given:
        raise IdempotencyKeyReused
