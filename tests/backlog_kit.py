"""The outage-backlog drill: a spool full of mail, the vendors back at their rate limits.

mailmux runs as its own process (`mailmux serve`) in front of two sendgrid
emulators in this process, each vendor with a configured rate limit. Both
emulators go down; `backlog` bulk and transactional messages are posted
and spooled. Then the emulators come back, answering after `latency_ms`,
and while the spool drains OTP codes are posted at a steady rate. The drill
returns what the emulators received and what the OTP senders saw; the test
(`test_backlog.py`) judges it and the benchmark (`benchmarks/backlog.py`)
reports it. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import MailmuxProcess, eventually, free_port

from mailmux.emulator.faults import Faults
from mailmux.emulator.server import Emulator

KEY = "client-key-backlog-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
VENDORS = ("a", "b")
FILL_CONCURRENCY = 32


@dataclass
class Drill:
    """What one run of the drill measured."""

    backlog: int
    limit: float  # msg/s the vendors' rate limits allow together
    fill_seconds: float = 0.0
    fill_failures: list[str] = field(default_factory=list)  # answers other than 202 queued
    healed_at: float = 0.0  # epoch seconds the emulators came back
    first_at: float = 0.0  # first and last backlog message received by an emulator
    last_at: float = 0.0
    delivered: Counter[str] = field(default_factory=Counter)  # subject → times received
    per_vendor: dict[str, int] = field(default_factory=dict)
    busiest_second: dict[str, int] = field(default_factory=dict)  # most received in 1 s, per vendor
    otp_latencies: list[float] = field(default_factory=list)  # seconds, each OTP's answer
    otp_states: Counter[str] = field(default_factory=Counter)
    otp_failures: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # what mailmux wrote to stderr

    @property
    def drain_seconds(self) -> float:
        return self.last_at - self.first_at

    @property
    def drain_rate(self) -> float:
        """Backlog messages per second, first delivery to last."""
        return (self.backlog - 1) / self.drain_seconds if self.drain_seconds > 0 else 0.0

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.delivered.values() if n > 1)

    def otp_percentile(self, q: int) -> float:
        """The q-th percentile of the OTP answers' latency, in seconds."""
        return statistics.quantiles(self.otp_latencies, n=100, method="inclusive")[q - 1]


def _config(workdir: Path, emulators: dict[str, Emulator], per_second: float) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "store": f"sqlite:///{workdir / 'backlog.db'}",
        "node_id": "backlog-node",
        "api_keys": [KEY],
        "delivery": {"attempt_timeout": 5.0},
        "health": {
            "consecutive_failures": 3,
            "base_ejection_seconds": 1.0,
            "max_ejection_seconds": 2.0,
        },
        "retry": {"base_delay": 2.0, "max_delay": 30.0, "poll_interval": 0.05},
        "reload": {"watch": False},
        "vendors": {
            name: {
                "kind": "sendgrid",
                "api_key": "SG.vendor-key",
                "base_url": f"http://127.0.0.1:{emulator.port}",
                "weight": 50,
                "rate_limit": {"per_second": per_second, "burst": max(1, round(per_second / 10))},
            }
            for name, emulator in emulators.items()
        },
    }


async def run_drill(
    workdir: Path,
    *,
    backlog: int = 20_000,
    per_second: float = 200.0,
    latency_ms: float = 100.0,
    otp_per_second: float = 10.0,
    timeout: float = 240.0,
) -> Drill:
    """Fill the spool while the vendors are down, heal them, drain it; see the module doc."""
    emulators = {name: Emulator("sendgrid", max_messages=backlog * 2) for name in VENDORS}
    drill = Drill(backlog=backlog, limit=per_second * len(VENDORS))
    mailmux: MailmuxProcess | None = None
    try:
        for emulator in emulators.values():
            await emulator.start()
            emulator.set_faults(Faults(down=True))
        mailmux = MailmuxProcess(_config(workdir, emulators, per_second), workdir)
        await mailmux.start()
        connector = aiohttp.TCPConnector(limit=FILL_CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            started = time.monotonic()
            await _fill(http, mailmux.url, backlog, drill)
            drill.fill_seconds = time.monotonic() - started
            drill.healed_at = time.time()
            for emulator in emulators.values():
                emulator.set_faults(Faults(latency_ms=latency_ms))
            otps = asyncio.create_task(_otps(http, mailmux.url, otp_per_second, drill))
            try:

                async def drained() -> bool:
                    received = sum(e.accepted_total for e in emulators.values())
                    if received - len(drill.otp_latencies) < backlog:
                        return False  # the cheap test first; then count the subjects
                    return _backlog_received(emulators) >= backlog

                await eventually(drained, timeout=timeout, what=f"{backlog} backlog messages")
            finally:
                otps.cancel()
                await asyncio.gather(otps, return_exceptions=True)
        _read(emulators, drill)
    finally:
        if mailmux is not None:
            await mailmux.stop()
            drill.log = mailmux.log
        for emulator in emulators.values():
            await emulator.stop()
    return drill


async def _fill(http: aiohttp.ClientSession, url: str, backlog: int, drill: Drill) -> None:
    """Post the backlog, half bulk and half transactional, FILL_CONCURRENCY at a time."""
    numbers = iter(range(backlog))

    async def sender() -> None:
        for n in numbers:
            body = {
                "from": "shop@example.com",
                "to": [f"user{n}@example.net"],
                "subject": f"backlog-{n}",
                "text": "your order",
                "class": "bulk" if n % 2 else "transactional",
            }
            async with http.post(f"{url}/v1/messages", json=body, headers=AUTH) as answer:
                receipt = await answer.json()
                if answer.status != 202 or receipt.get("state") != "queued":
                    drill.fill_failures.append(f"{answer.status} {receipt}")

    await asyncio.gather(*(sender() for _ in range(FILL_CONCURRENCY)))


async def _otps(http: aiohttp.ClientSession, url: str, rate: float, drill: Drill) -> None:
    """An OTP every 1/rate seconds, each timed from its due time, until cancelled."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: set[asyncio.Task[None]] = set()

    async def one(n: int, due: float) -> None:
        body = {
            "from": "login@example.com",
            "to": [f"person{n}@example.net"],
            "subject": f"otp-{n}",
            "text": f"your code is {n:06d}",
            "class": "otp",
        }
        async with http.post(f"{url}/v1/messages", json=body, headers=AUTH) as answer:
            receipt = await answer.json()
        drill.otp_latencies.append(loop.time() - due)
        drill.otp_states[receipt.get("state", f"http {answer.status}")] += 1
        if answer.status not in (200, 202):
            drill.otp_failures.append(f"{answer.status} {receipt}")

    try:
        for n in range(10**9):
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            task = asyncio.create_task(one(n, due))
            sent.add(task)
            task.add_done_callback(sent.discard)
    finally:
        await asyncio.gather(*sent, return_exceptions=True)  # in-flight OTPs are counted


def _backlog_received(emulators: dict[str, Emulator]) -> int:
    return sum(
        m.body["subject"].startswith("backlog-") for e in emulators.values() for m in e.messages
    )


def _read(emulators: dict[str, Emulator], drill: Drill) -> None:
    """What the emulators received: counts, duplicates, the drain's span, the busiest second."""
    times: list[float] = []
    for name, emulator in emulators.items():
        per_second: Counter[int] = Counter()
        count = 0
        for message in emulator.messages:
            subject = message.body["subject"]
            drill.delivered[subject] += 1
            if subject.startswith("backlog-"):
                times.append(message.received_at)
                per_second[int(message.received_at)] += 1
                count += 1
        drill.per_vendor[name] = count
        drill.busiest_second[name] = max(per_second.values(), default=0)
    if times:
        drill.first_at, drill.last_at = min(times), max(times)
