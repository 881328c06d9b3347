"""A vendor's connection pool, shared so that what can wait never holds all of it.

Retries and first attempts of the least urgent class hold at most the
vendor's `PoolShare`; urgent first attempts never ask it, so they find a
connection free however big the backlog. Fake vendors whose requests stay
open until the test lets them go show who holds what, without timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import (
    T0,
    FakeClock,
    Rig,
    accepted,
    ambiguous,
    make_message,
    make_rig,
    opened_store,
    spool,
)

from mailmux.config import VendorConfig
from mailmux.delivery import DeliveryPolicy
from mailmux.health import HealthState
from mailmux.message import Message
from mailmux.pool_share import PoolShare, reserved_for_urgent
from mailmux.spool.base import MessageState
from mailmux.spool.sqlite import SqliteStore
from mailmux.vendors.base import AttemptResult, Vendor
from mailmux.vendors.registry import build_vendor

#: How long a test waits for requests it expects to open before it fails.
WAIT_AT_MOST = 10.0
BULK = make_message(traffic_class="bulk")
OTP = make_message(traffic_class="otp")


class HeldVendor(Vendor):
    """Accepts each message, but only once the test lets its request go."""

    kind = "held"

    def __init__(self, name: str, pool_size: int) -> None:
        super().__init__(name)
        self.share = PoolShare(pool_size)
        self.open: list[tuple[Message, asyncio.Event]] = []
        self.sent: list[Message] = []
        self._opened = asyncio.Condition()
        self._all_go = False

    async def send(self, message: Message, timeout: float, message_id: str) -> AttemptResult:
        go = asyncio.Event()
        if self._all_go:
            go.set()
        async with self._opened:
            self.open.append((message, go))
            self._opened.notify_all()
        try:
            async with asyncio.timeout(WAIT_AT_MOST):  # not `timeout`: held is held
                await go.wait()
        except TimeoutError:
            return ambiguous()
        finally:
            self.open.remove((message, go))
        self.sent.append(message)
        return accepted(f"{self.name}-{len(self.sent)}")

    async def until_open(self, count: int) -> None:
        """Until `count` requests are open at once (a broken share fails, never hangs)."""
        async with asyncio.timeout(WAIT_AT_MOST), self._opened:
            await self._opened.wait_for(lambda: len(self.open) >= count)

    def let_go(self) -> None:
        """Answer every request open now, and every later one at once."""
        self._all_go = True
        for _, go in self.open:
            go.set()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_store(tmp_path / "spool.db", clock=FakeClock(T0)) as store:
        yield store


def rig_of(store: SqliteStore, *vendors: Vendor, attempt_timeout: float = 30.0) -> Rig:
    return make_rig(
        store,
        vendors,
        wall=FakeClock(T0),
        policy=DeliveryPolicy(attempt_timeout=attempt_timeout),
    )


@pytest.mark.parametrize(
    ("pool_size", "reserved"), [(1, 0), (2, 1), (4, 1), (19, 1), (20, 2), (100, 10)]
)
def test_a_tenth_of_a_pool_is_kept_for_urgent_mail_and_a_pool_of_one_is_lent_whole(
    pool_size: int, reserved: int
) -> None:
    assert reserved_for_urgent(pool_size) == reserved
    assert PoolShare(pool_size).size == pool_size - reserved


def test_a_pool_of_no_connections_is_refused() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        PoolShare(0)


async def test_a_full_share_waits_for_a_release_or_for_its_timeout() -> None:
    share = PoolShare(4)
    assert [await share.hold(0.0) for _ in range(3)] == [True, True, True]
    assert share.held == 3
    assert await share.hold(0.0) is False  # no place, and no time to wait for one
    waiting = asyncio.ensure_future(share.hold(30.0))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiting.done()
    share.release()
    assert await waiting is True
    assert share.held == 3


@pytest.mark.parametrize(("kind", "pool_size"), [("sendgrid", 100), ("smtp", 4)])
def test_built_vendors_share_their_pool(kind: str, pool_size: int) -> None:
    fields = {"host": "127.0.0.1"} if kind == "smtp" else {"api_key": "k"}
    config = VendorConfig.model_validate({"kind": kind, "weight": 1, **fields})
    vendor = build_vendor("v", config)
    assert vendor.share is not None
    assert vendor.share.size == pool_size - reserved_for_urgent(pool_size)


async def test_bulk_first_attempts_hold_only_their_share_and_an_otp_goes_straight_out(
    store: SqliteStore,
) -> None:
    vendor = HeldVendor("a", pool_size=4)  # three places for what can wait, one kept
    rig = rig_of(store, vendor)
    bulk = [asyncio.ensure_future(rig.deliverer.submit(BULK)) for _ in range(5)]
    await vendor.until_open(3)
    assert vendor.share is not None and vendor.share.held == 3

    otp = asyncio.ensure_future(rig.deliverer.submit(OTP))
    await vendor.until_open(4)  # the OTP is sent while two bulk messages wait for a place

    assert [m.traffic_class for m, _ in vendor.open].count("otp") == 1
    assert len(vendor.open) == 4
    vendor.let_go()
    receipts = await asyncio.gather(otp, *bulk)
    assert {r.state for r in receipts} == {MessageState.SENT}
    assert len(vendor.sent) == 6
    assert vendor.share.held == 0


async def test_retries_hold_only_the_share_even_of_an_urgent_class(store: SqliteStore) -> None:
    vendor = HeldVendor("a", pool_size=4)
    rig = rig_of(store, vendor)
    for n in range(4):
        await spool(store, f"m{n}", OTP, due=T0, priority=100)
    leased = await store.lease_due(now=T0, owner="node", lease_seconds=60.0, limit=4)
    assert len(leased) == 4
    retries = [asyncio.ensure_future(rig.deliverer.redeliver(lease, "node")) for lease in leased]
    await vendor.until_open(3)
    assert vendor.share is not None and vendor.share.held == 3

    first = asyncio.ensure_future(rig.deliverer.submit(OTP))
    await vendor.until_open(4)

    assert [m.traffic_class for m, _ in vendor.open] == ["otp"] * 4  # 3 retries, 1 first
    assert vendor.share.held == 3
    vendor.let_go()
    assert (await first).state is MessageState.SENT
    assert await asyncio.gather(*retries) == [MessageState.SENT] * 4


async def test_a_share_busy_past_the_attempt_timeout_skips_the_vendor_without_blame(
    store: SqliteStore,
) -> None:
    busy = HeldVendor("a", pool_size=2)  # one place for what can wait
    rig = rig_of(store, busy, attempt_timeout=0.05)
    holder = asyncio.ensure_future(rig.deliverer.submit(BULK))
    await busy.until_open(1)

    receipt = await rig.deliverer.submit(BULK)  # waits 50 ms for a place, gets none

    assert receipt.state is MessageState.QUEUED
    [stats] = rig.health.stats()
    assert (stats.state, stats.consecutive_failures) == (HealthState.HEALTHY, 0)
    assert len(busy.open) == 1
    busy.let_go()
    assert (await holder).state is MessageState.SENT


async def test_an_attempt_cancelled_while_waiting_for_its_share_gives_its_capacity_back(
    store: SqliteStore,
) -> None:
    busy = HeldVendor("a", pool_size=2)
    rig = rig_of(store, busy)
    holder = asyncio.ensure_future(rig.deliverer.submit(BULK))
    await busy.until_open(1)
    usage = rig.deliverer.capacity.usage
    assert usage.reserved("a") == 1

    waiter = asyncio.ensure_future(rig.deliverer.submit(BULK))
    for _ in range(100):  # until it holds its unit of today and waits for a place
        if usage.reserved("a") == 2:
            break
        await asyncio.sleep(0)
    assert usage.reserved("a") == 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert usage.reserved("a") == 1  # only the holder's attempt is in flight
    assert busy.share is not None and busy.share.held == 1
    busy.let_go()
    assert (await holder).state is MessageState.SENT
    assert usage.reserved("a") == 0
