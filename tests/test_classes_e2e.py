"""Traffic classes, warm-up caps and ESP rate limits over real sockets, with emulators.

mailmux runs in-process from a YAML file in front of one sendgrid emulator
per vendor (`node_kit`); messages go in over its native HTTP API, and what
each emulator accepted is what the vendor sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from harness import eventually
from node_kit import AUTH, BODY, Node, node

from mailmux.emulator.faults import Faults
from mailmux.health import HealthState
from mailmux.spool.base import EventKind, MessageState
from mailmux.warmup import utc_day

WAIT = 10.0  # the bound on every wait in these tests
DOWN = Faults(down=True)


async def post(mux: Node, **fields: Any) -> tuple[float, dict[str, Any]]:
    """Send one message; the seconds its answer took, and the answer (a receipt)."""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{mux.url}/v1/messages", json={**BODY, **fields}, headers=AUTH) as answer,
    ):
        body = await answer.json()
        assert answer.status in (200, 202), body  # sent, or queued
    return time.monotonic() - started, body


async def state_of(mux: Node, message_id: str) -> tuple[MessageState, list[Any]]:
    found = await mux.app.store.get(message_id)
    assert found is not None
    return found[0].state, found[1]


def received(mux: Node, vendor: str) -> list[str]:
    """The subjects `vendor`'s emulator accepted, oldest first."""
    return [m.body["subject"] for m in mux.emulators[vendor].messages]


def health_state(mux: Node, vendor: str) -> HealthState:
    [stats] = [s for s in mux.app.health.stats() if s.vendor == vendor]
    return stats.state


async def test_an_otp_whose_deadline_passes_while_every_vendor_is_down_expires_unsent(
    tmp_path: Path,
) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        for emulator in mux.emulators.values():
            emulator.set_faults(DOWN)
        _, receipt = await post(mux, subject="code", **{"class": "otp", "deadline": 2})
        assert receipt["state"] == "queued"
        deadline = time.time() + 2.0

        async def expired() -> bool:
            return (await state_of(mux, receipt["id"]))[0] is MessageState.EXPIRED

        await eventually(expired, timeout=WAIT, what="the otp to expire")
        expired_at = time.time()
        for emulator in mux.emulators.values():
            emulator.set_faults(Faults())  # the vendors come back after the deadline
        # A message sent now is delivered: the vendors are up, and the otp stays expired.
        _, later = await post(mux, subject="after")
        state, events = await state_of(mux, receipt["id"])

    assert later["state"] == "sent"
    assert state is MessageState.EXPIRED
    assert expired_at < deadline + 1.0  # the Retrier noticed the deadline in time
    assert received(mux, "a") + received(mux, "b") == ["after"]
    kinds = [e.kind for e in events]
    assert kinds[-1] is EventKind.EXPIRED and EventKind.SENT not in kinds


async def test_a_hedged_otp_is_sent_by_the_second_vendor_while_the_first_is_slow(
    tmp_path: Path,
) -> None:
    hedge = 0.3
    classes = {"otp": {"hedge_after": hedge}}
    async with node(tmp_path, {"slow": 100, "fast": 0}, classes=classes) as mux:
        mux.emulators["slow"].set_faults(Faults(latency_ms=3000))
        took, receipt = await post(mux, subject="code", **{"class": "otp"})

        async def loser_recorded() -> bool:
            _, events = await state_of(mux, receipt["id"])
            return any(e.vendor == "slow" for e in events if e.kind is EventKind.ATTEMPT)

        await eventually(loser_recorded, timeout=WAIT, what="the slow attempt's outcome")
        state, events = await state_of(mux, receipt["id"])

    assert receipt["state"] == "sent" and receipt["vendor"] == "fast"
    assert hedge <= took < hedge + 0.5  # the hedge delay plus the fast vendor's latency
    assert state is MessageState.SENT
    assert [e.vendor for e in events if e.kind is EventKind.SENT] == ["fast"]
    attempts = {e.vendor: dict(e.detail) for e in events if e.kind is EventKind.ATTEMPT}
    assert attempts["fast"]["hedge"] == "won" and attempts["fast"]["outcome"] == "accepted"
    assert attempts["slow"]["hedge"] == "lost" and attempts["slow"]["outcome"] == "accepted"
    assert received(mux, "fast") == ["code"]


async def test_a_warm_up_cap_of_n_sends_exactly_n_to_the_new_vendor_and_spills_the_rest(
    tmp_path: Path,
) -> None:
    today = utc_day(time.time()).isoformat()
    warmup = {"new": {"warmup": {"start": today, "daily_caps": [5, 10]}}}
    async with node(tmp_path, {"old": 50, "new": 50}, extra=warmup) as mux:
        answers = [(await post(mux, subject=f"m{n}"))[1] for n in range(40)]
        status, shown = await mux.admin("GET", "warmup")

    assert {a["state"] for a in answers} == {"sent"}
    assert len(received(mux, "new")) == 5
    assert len(received(mux, "old")) == 35
    assert status == 200
    [schedule] = shown["schedules"]
    assert (schedule["vendor"], schedule["day"], schedule["cap"]) == ("new", 1, 5)
    assert (schedule["sent"], schedule["days_left"]) == (5, 2)


async def test_a_vendor_answering_429_with_retry_after_is_skipped_until_then(
    tmp_path: Path,
) -> None:
    async with node(tmp_path, {"a": 100, "b": 0}) as mux:
        mux.emulators["a"].set_faults(Faults(status=429, retry_after=2))
        _, first = await post(mux, subject="first")
        told = time.monotonic()
        mux.emulators["a"].set_faults(Faults())  # a could take mail again, but said to wait
        within = [(await post(mux, subject=f"w{n}"))[1]["vendor"] for n in range(10)]
        assert time.monotonic() < told + 2.0  # all of them were sent inside the wait
        assert health_state(mux, "a") is HealthState.HEALTHY
        _, attempts = await state_of(mux, first["id"])

        async def a_again() -> bool:
            _, answer = await post(mux, subject="later")
            return bool(answer["vendor"] == "a")

        await eventually(a_again, timeout=WAIT, what="a to be used again after its retry-after")
        back = time.monotonic()

    assert first["vendor"] == "b"
    assert [dict(e.detail).get("status") for e in attempts if e.vendor == "a"] == [429]
    assert within == ["b"] * 10
    assert received(mux, "a")[:1] == ["later"]
    assert back >= told + 2.0 - 0.1  # not before the retry-after (less the request's own time)


async def test_a_vendor_that_recovers_gets_the_backlog_at_once_not_after_its_back_off(
    tmp_path: Path,
) -> None:
    health = {"consecutive_failures": 3, "base_ejection_seconds": 0.2}
    retry = {"max_delay": 600.0}  # the retry-after is waited out, not cut to 0.5 s
    async with node(tmp_path, {"a": 100}, health=health, retry=retry) as mux:
        mux.emulators["a"].set_faults(Faults(status=503, retry_after=300))
        waiting = [(await post(mux, subject=f"w{n}"))[1] for n in range(3)]
        records = [(await mux.app.store.get(r["id"])) for r in waiting]
        assert health_state(mux, "a") is HealthState.EJECTED
        mux.emulators["a"].set_faults(Faults())
        _, probe = await post(mux, subject="probe")  # sent: a recovers

        async def backlog_sent() -> bool:
            states = [(await state_of(mux, r["id"]))[0] for r in waiting]
            return states == [MessageState.SENT] * 3

        await eventually(backlog_sent, timeout=WAIT, what="the backlog to go to a")

    assert {r["state"] for r in waiting} == {"queued"} and probe["state"] == "sent"
    for found in records:  # each was due only after the 503's retry-after of 300 s
        assert found is not None and found[0].next_attempt_at is not None
        assert found[0].next_attempt_at >= found[0].created_at + 300
    assert sorted(received(mux, "a")) == ["probe", "w0", "w1", "w2"]


async def test_an_otp_does_not_wait_behind_a_backlog_holding_the_vendors_connections(
    tmp_path: Path,
) -> None:
    """Four connections and sixty retries at 300 ms each: in one line, the OTP would wait
    about 60 / 4 * 0.3 = 4.5 s; the connection kept for urgent mail sends it at once."""
    # The outage and the slowness are not the point here: nothing ejects the vendor.
    health = {"consecutive_failures": 1000, "min_requests": 1000, "latency_p90_seconds": None}
    async with node(tmp_path, {"a": 100}, extra={"a": {"pool_size": 4}}, health=health) as mux:
        emulator = mux.emulators["a"]
        emulator.set_faults(DOWN)
        backlog = [(await post(mux, subject=f"b{n}", **{"class": "bulk"}))[1] for n in range(60)]
        emulator.set_faults(Faults(latency_ms=300))

        async def draining() -> bool:
            return len(emulator.messages) >= 3

        await eventually(draining, timeout=WAIT, what="the backlog to reach the vendor")
        took, otp = await post(mux, subject="code", **{"class": "otp"})
        in_line = 60 - len(emulator.messages)

    assert {r["state"] for r in backlog} == {"queued"}
    assert otp["state"] == "sent"
    assert in_line > 40  # the backlog was still there, waiting for connections
    assert took < 1.5  # its own 300 ms and mailmux's, not the line's 4.5 s
