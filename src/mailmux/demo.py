"""`mailmux demo`: the failover drill of the README in one process, watched live.

The drill by hand takes four terminals, a config file and curl; this runs
the same story with nothing to set up, so someone trying mailmux sees what
it is for within a minute: two emulated ESPs at 70/30, steady traffic
through the native API, the 70 % vendor turning slow, then down, then
healthy again — and the split, the ejection, the half-open probes and the
failback as they happen, ending with the count of failed client requests
(the promise is 0) and how long the traffic took to move.

Everything runs in one event loop in a temporary directory, and is stopped
on the way out, Ctrl-C included. Health thresholds are shortened (a 300 ms
latency threshold, ejections of 1.5 to 3 s) so the story fits the duration.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from mailmux.app import App
from mailmux.config import Config
from mailmux.emulator import Emulator, Faults
from mailmux.health import Ejected, ProbeAdmitted, Recovered

PRIMARY, BACKUP = "primary", "backup"
WEIGHTS = {PRIMARY: 70, BACKUP: 30}
MIN_DURATION = 15.0
#: The primary's answer time while slow: twice the demo's latency threshold.
SLOW_MS = 600
RATE = 80  # messages per second offered
CONCURRENCY = 32  # client requests in flight at most
#: The live split is measured over this many trailing seconds.
WINDOW = 1.0
#: The primary counts as shifted away once its share is below this ...
SHIFTED = 0.05
#: ... among the requests made over this many seconds.
SHIFT_SPAN = 0.5
TICK = 0.25


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    starts: float  # seconds after traffic started
    faults: Faults
    says: str


def story(duration: float) -> tuple[Phase, ...]:
    """Healthy, slow, down, healed: each a fifth of the run, the last two fifths healed."""
    return (
        Phase("healthy", 0.0, Faults(), f"traffic starts: {RATE} messages/s, split 70/30"),
        Phase(
            "slow",
            0.2 * duration,
            Faults(latency_ms=SLOW_MS),
            f"{PRIMARY} turns slow ({SLOW_MS} ms per answer)",
        ),
        Phase("down", 0.4 * duration, Faults(down=True), f"{PRIMARY} goes down"),
        Phase("healed", 0.6 * duration, Faults(), f"{PRIMARY} is healthy again"),
    )


def demo_config(tmp: Path, ports: dict[str, int]) -> Config:
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "store": f"sqlite:///{tmp / 'demo.db'}",
            "node_id": "demo",
            "vendors": {
                name: {
                    "kind": "sendgrid",
                    "api_key": "demo",
                    "base_url": f"http://127.0.0.1:{ports[name]}",
                    "weight": weight,
                }
                for name, weight in WEIGHTS.items()
            },
            "delivery": {"attempt_timeout": 2.0},
            "health": {
                "window_seconds": 3.0,
                "min_requests": 10,
                "latency_p90_seconds": SLOW_MS / 2000,
                "base_ejection_seconds": 1.5,
                "max_ejection_seconds": 3.0,
            },
            "retry": {"poll_interval": 0.5, "base_delay": 0.5, "max_delay": 2.0},
        }
    )


@dataclass
class Traffic:
    """Steady client traffic against the native API, and what each request got back."""

    url: str
    sent: int = 0
    queued: int = 0
    failed: int = 0
    #: (when answered, vendor) of each sent message, for the trailing split.
    recent: deque[tuple[float, str]] = field(default_factory=deque)
    #: (when requested, vendor) of each sent message, for the shift.
    requested: list[tuple[float, str]] = field(default_factory=list)
    #: Sent messages per phase and vendor, for the summary.
    per_phase: dict[str, Counter[str]] = field(default_factory=dict)
    phase: str = "healthy"

    async def run(self, session: aiohttp.ClientSession, until: float) -> None:
        """Offer RATE messages a second until `until`; never more than CONCURRENCY at once.

        A late request is not made up for with a burst: the rate stays steady.
        """
        slots = asyncio.Semaphore(CONCURRENCY)
        pending: set[asyncio.Task[None]] = set()
        due = time.monotonic()
        n = 0
        try:
            while due < until:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await slots.acquire()
                task = asyncio.create_task(self._one(session, n, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                due = max(due + 1 / RATE, time.monotonic())
            await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()

    async def _one(self, session: aiohttp.ClientSession, n: int, slots: asyncio.Semaphore) -> None:
        body = {
            "from": "Demo <demo@shop.example>",
            "to": ["ada@example.com"],
            "subject": f"demo {n}",
            "text": "hello",
        }
        made = time.monotonic()
        try:
            async with session.post(f"{self.url}/v1/messages", json=body) as response:
                reply: dict[str, Any] = await response.json()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ValueError):
            self.failed += 1
            return
        finally:
            slots.release()
        if status == 200 and reply.get("state") == "sent":
            self.sent += 1
            vendor = str(reply["vendor"])
            self.recent.append((time.monotonic(), vendor))
            self.requested.append((made, vendor))
            self.per_phase.setdefault(self.phase, Counter())[vendor] += 1
        elif status == 202 and reply.get("state") == "queued":
            self.queued += 1
        else:
            self.failed += 1

    def split(self, now: float) -> tuple[Counter[str], int]:
        """Messages per vendor answered over the last WINDOW seconds, and their total."""
        while self.recent and self.recent[0][0] <= now - WINDOW:
            self.recent.popleft()
        counts = Counter(vendor for _, vendor in self.recent)
        return counts, sum(counts.values())


class HealthEvents(logging.Handler):
    """Collects the health transitions the Deliverer logs, as lines for the screen.

    Health hands each event out once (`take_events`), to the Deliverer, which
    logs it: listening to the log sees them all without taking them away.
    Errors are kept too, so that hiding mailmux's log lines hides no trouble.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        #: (monotonic time, what happened), oldest first.
        self.lines: list[tuple[float, str]] = []

    def add(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))

    def emit(self, record: logging.LogRecord) -> None:
        event = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if isinstance(event, Ejected):
            seconds = event.until - time.monotonic()
            self.add(
                f"{event.vendor} ejected ({event.reason.value}: {event.detail}) for {seconds:.1f} s"
            )
        elif isinstance(event, ProbeAdmitted):
            self.add(f"{event.vendor}: half-open probe")
        elif isinstance(event, Recovered):
            self.add(f"{event.vendor} recovered: failback")
        elif record.levelno >= logging.ERROR:
            self.add(f"error: {record.getMessage()}")


@contextlib.contextmanager
def captured_logs() -> Iterator[HealthEvents]:
    """mailmux's log lines go to the demo's event list instead of stderr, while it runs."""
    logger = logging.getLogger("mailmux")
    handler = HealthEvents()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield handler
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def running(tmp: Path) -> AsyncIterator[tuple[App, dict[str, Emulator]]]:
    """The two emulated ESPs and mailmux routing to them, stopped on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        emulators = {name: Emulator("sendgrid") for name in WEIGHTS}
        for emulator in emulators.values():
            await emulator.start()
            stack.push_async_callback(emulator.stop)
        app = App(demo_config(tmp, {n: e.port for n, e in emulators.items()}))
        await app.start()
        stack.push_async_callback(app.stop)
        yield app, emulators


@dataclass
class Screen:
    """What the terminal shows: a live table on a TTY, a few plain lines otherwise."""

    console: Console
    events: HealthEvents
    start: float  # monotonic time the traffic started: event times count from it
    shown: int = 0  # event lines already printed (plain output)
    last_line: float = 0.0

    def render(self, elapsed: float, phase: str, traffic: Traffic, status: dict[str, Any]) -> Group:
        counts, total = traffic.split(time.monotonic())
        table = Table("vendor", "weight", "state", "msg/s", "share", "p90")
        for v in status["vendors"]:
            share = counts[v["name"]] / total if total else 0.0
            state = v["state"]
            colour = {"healthy": "green", "ejected": "red"}.get(state, "yellow")
            p90 = v["latency_p90_ms"]
            table.add_row(
                v["name"],
                f"{v['weight']:g}",
                f"[{colour}]{state}[/]",
                f"{counts[v['name']] / WINDOW:.0f}",
                f"{share:.0%}",
                "-" if p90 is None else f"{p90:g} ms",
            )
        head = (
            f"[bold]mailmux demo[/] {elapsed:4.1f} s, phase [bold]{phase}[/]; "
            f"sent {traffic.sent}, queued {traffic.queued}, failed {traffic.failed}; "
            f"spool depth {status['spool']['queued']}"
        )
        return Group(head, table, *(self._event(e) for e in self.events.lines[-8:]))

    def _event(self, event: tuple[float, str]) -> str:
        when, line = event
        return f"{when - self.start:5.1f} s  {line}"

    def plain(self, elapsed: float, phase: str, traffic: Traffic, status: dict[str, Any]) -> None:
        """Without a TTY: each new event, and the split every five seconds."""
        for event in self.events.lines[self.shown :]:
            self.console.print(self._event(event), highlight=False, soft_wrap=True)
        self.shown = len(self.events.lines)
        if elapsed - self.last_line >= 5.0:
            self.last_line = elapsed
            counts, total = traffic.split(time.monotonic())
            split = ", ".join(
                f"{v['name']} {counts[v['name']] / total if total else 0:.0%} ({v['state']})"
                for v in status["vendors"]
            )
            self.console.print(
                f"{elapsed:5.1f} s  split {split}; spool {status['spool']['queued']}",
                highlight=False,
                soft_wrap=True,
            )


async def drill(duration: float, console: Console) -> int:
    """Run the story; print the summary; 0 when every client request was answered 200 or 202."""
    phases = story(duration)
    with tempfile.TemporaryDirectory(prefix="mailmux-demo-") as tmp, captured_logs() as events:
        async with running(Path(tmp)) as (app, emulators):
            traffic = Traffic(f"http://127.0.0.1:{app.port}")
            console.print(
                f"dashboard: http://127.0.0.1:{app.port}/dashboard (the same story, live, "
                "while the demo runs)",
                highlight=False,
                soft_wrap=True,
            )
            start = time.monotonic()
            screen = Screen(console, events, start)
            broken_at: float | None = None
            timeout = aiohttp.ClientTimeout(total=10)
            connector = aiohttp.TCPConnector(limit=CONCURRENCY)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                sender = asyncio.create_task(traffic.run(session, start + duration))
                live = Live(console=console, auto_refresh=False) if console.is_terminal else None
                with live or contextlib.nullcontext():
                    try:
                        upcoming = list(phases)
                        while not sender.done():
                            now = time.monotonic()
                            while upcoming and now - start >= upcoming[0].starts:
                                phase = upcoming.pop(0)
                                emulators[PRIMARY].set_faults(phase.faults)
                                traffic.phase = phase.name
                                events.add(phase.says)
                                if phase.name == "slow":
                                    broken_at = now
                            status = await app.status()
                            if live is not None:
                                live.update(
                                    screen.render(now - start, traffic.phase, traffic, status),
                                    refresh=True,
                                )
                            else:
                                screen.plain(now - start, traffic.phase, traffic, status)
                            await asyncio.wait({sender}, timeout=TICK)
                    finally:
                        sender.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await sender
    shift = None if broken_at is None else shift_seconds(traffic.requested, broken_at)
    summarise(console, traffic, phases, shift)
    return 0 if traffic.failed == 0 else 1


def shift_seconds(requested: list[tuple[float, str]], broken_at: float) -> float | None:
    """From breaking the primary to the first moment the requests made over the next
    SHIFT_SPAN seconds went to it less than SHIFTED of the time; None if that never came.

    Counted by when requests were made, not answered: a slow answer from before the
    ejection shows when routing changed no better than a trailing window of answers.
    """
    made = sorted(requested)
    starts = [when for when, _ in made]
    t = broken_at
    while made and t < starts[-1]:
        span = made[bisect.bisect_left(starts, t) : bisect.bisect_left(starts, t + SHIFT_SPAN)]
        if span and sum(vendor == PRIMARY for _, vendor in span) / len(span) < SHIFTED:
            return t - broken_at
        t += 0.05
    return None


def summarise(
    console: Console, traffic: Traffic, phases: tuple[Phase, ...], shift: float | None
) -> None:
    table = Table("phase", *WEIGHTS, title="share of messages sent")
    for phase in phases:
        counts = traffic.per_phase.get(phase.name, Counter())
        total = sum(counts.values())
        table.add_row(phase.name, *(f"{counts[v] / total:.1%}" if total else "-" for v in WEIGHTS))
    console.print(table)
    total = traffic.sent + traffic.queued + traffic.failed
    console.print(
        f"summary: {total} requests: {traffic.sent} sent, {traffic.queued} queued, "
        f"{traffic.failed} failed",
        highlight=False,
        soft_wrap=True,
    )
    if shift is None:
        console.print(
            f"shift: {PRIMARY}'s share never fell below {SHIFTED:.0%}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"shift: {PRIMARY}'s share fell below {SHIFTED:.0%} {shift:.2f} s after it "
            f"turned slow (of the requests made over {SHIFT_SPAN:g} s)",
            highlight=False,
            soft_wrap=True,
        )


def run_demo(duration: float) -> int:
    """The `mailmux demo` command."""
    return asyncio.run(drill(duration, Console()))
