"""A lean HTTP/1.1 load generator: open loop at a fixed rate, or closed loop at a fixed concurrency.

Run as its own process (pinned to the load core) and print one
`BENCH_RESULT {json}` line, the same line benchmarks/post.lua makes wrk
print, so the orchestrator reads both alike.

Why not aiohttp's client: the generator shares a core with the emulator, so
every microsecond it spends is taken from the stack it measures, and its own
overhead lands in every latency it reports. A raw asyncio protocol with a
prebuilt request and a parser that only looks for the status and
Content-Length costs a fraction of that. It therefore only understands
responses that carry Content-Length (all of aiohttp's `web.Response` do);
anything else counts as an error, never as a success.

Open loop (for latency): request i is *due* at start + i / rate, whatever
happened to earlier requests, and its latency is measured from that due
time, so a stalled server shows up as latency rather than as fewer requests
(no coordinated omission). Due times come from a thread sleeping with
`time.sleep` (µs precision): the event loop's timers have 1 ms granularity,
which alone would add ~0.5 ms to every figure. The generator's own lateness
(send time - due time) is reported as `lag_*` so its noise is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

RESULT_PREFIX = "BENCH_RESULT "
#: How long a request may take before it counts as a timeout error.
REQUEST_TIMEOUT = 10.0
_CONTENT_LENGTH = b"\r\ncontent-length:"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured; latencies in milliseconds."""

    ok: int  # responses with the expected status
    unexpected: int  # responses with any other status
    errors: int  # requests without a usable response: connection errors, timeouts, bad framing
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    lag_p50_ms: float | None = None  # open loop: how late the generator itself sent
    lag_p99_ms: float | None = None

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def clean(self) -> bool:
        return self.unexpected == 0 and self.errors == 0

    def to_line(self) -> str:
        return RESULT_PREFIX + json.dumps(asdict(self))

    @classmethod
    def from_output(cls, output: str) -> LoadResult:
        """The result line from a generator's output (ours or wrk's); ValueError if absent."""
        for line in output.splitlines():
            if line.startswith(RESULT_PREFIX):
                return cls(**json.loads(line[len(RESULT_PREFIX) :]))
        raise ValueError("no result line in the load generator's output")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send, and the request bytes to send there, built once."""

    host: str
    port: int
    request: bytes
    expect: int

    @classmethod
    def build(cls, url: str, body: bytes, headers: Sequence[str], expect: int) -> Target:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"--url needs a host and a port: {url}")
        lines = [
            f"POST {parts.path or '/'} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            f"Content-Length: {len(body)}",
            *headers,
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return cls(parts.hostname, parts.port, head + body, expect)


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.done_at = 0.0  # perf_counter() when the last response was complete
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP connection's transport (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        self.open = True

    def send(self, request: bytes) -> asyncio.Future[int]:
        """Write a request; the future resolves to the response status."""
        if self.transport is None or not self.open:
            raise ConnectionError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        at = head.find(_CONTENT_LENGTH)
        if at < 0:
            self._fail(ConnectionError("response without Content-Length"))
            return
        length = int(head[at + len(_CONTENT_LENGTH) :].split(b"\r\n", 1)[0])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        self.done_at = time.perf_counter()
        status = int(self._buffer[9:12])
        del self._buffer[:total]
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def _fail(self, error: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(error)


async def connect(target: Target) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(
        Connection, target.host, target.port
    )
    return connection


class Tally:
    """Latencies and counts of one run."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0

    def response(self, status: int, latency: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(latency)

    def result(self, duration: float, with_lag: bool) -> LoadResult:
        latencies = sorted(self.latencies)
        lags = sorted(self.lags)
        ok = self.statuses[self.expect]
        mean = sum(latencies) / len(latencies) if latencies else 0.0
        return LoadResult(
            ok=ok,
            unexpected=sum(self.statuses.values()) - ok,
            errors=self.errors,
            duration_s=duration,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            mean_ms=mean * 1000,
            lag_p50_ms=percentile(lags, 50) * 1000 if with_lag else None,
            lag_p99_ms=percentile(lags, 99) * 1000 if with_lag else None,
        )


async def closed_loop(target: Target, connections: int, duration: float) -> LoadResult:
    """`connections` workers, each sending its next request as soon as the last one is answered."""
    tally = Tally(target.expect)
    opened = await asyncio.gather(*(connect(target) for _ in range(connections)))
    started = time.perf_counter()
    stop_at = started + duration

    async def worker(connection: Connection) -> None:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                if not connection.open:
                    connection = await connect(target)
                status = await asyncio.wait_for(connection.send(target.request), REQUEST_TIMEOUT)
            except (ConnectionError, OSError, TimeoutError):
                tally.errors += 1
                if connection.transport is not None:
                    connection.transport.abort()
                continue
            tally.response(status, connection.done_at - sent)

    await asyncio.gather(*(worker(c) for c in opened))
    duration_s = time.perf_counter() - started
    for connection in opened:
        if connection.transport is not None:
            connection.transport.close()
    return tally.result(duration_s, with_lag=False)


class Pool:
    """Idle keep-alive connections, reused last-in first-out so few stay warm."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._idle: list[Connection] = []

    async def fill(self, count: int) -> None:
        self._idle.extend(await asyncio.gather(*(connect(self.target) for _ in range(count))))

    async def take(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.open:
                return connection
        return await connect(self.target)

    def give_back(self, connection: Connection) -> None:
        if connection.open:
            self._idle.append(connection)

    def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()


async def open_loop(target: Target, rate: float, duration: float) -> LoadResult:
    """Send at `rate` per second for `duration` seconds; latency counts from each due time."""
    tally = Tally(target.expect)
    pool = Pool(target)
    await pool.fill(32)
    count = max(1, round(rate * duration))
    started = time.perf_counter() + 0.05

    async def one(due: float) -> None:
        connection = await pool.take()
        tally.lags.append(time.perf_counter() - due)
        try:
            status = await asyncio.wait_for(connection.send(target.request), REQUEST_TIMEOUT)
        except (ConnectionError, OSError, TimeoutError):
            tally.errors += 1
            if connection.transport is not None:
                connection.transport.abort()
            return
        tally.response(status, connection.done_at - due)
        pool.give_back(connection)

    await run_paced(one, started, rate, count)
    duration_s = time.perf_counter() - started
    pool.close()
    return tally.result(duration_s, with_lag=True)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--expect", type=int, required=True, help="the success status")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--connections", type=int, help="closed loop: concurrent connections")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    target = Target.build(args.url, args.body_file.read_bytes(), args.header, args.expect)
    if args.rate is not None:
        run = open_loop(target, args.rate, args.duration)
    else:
        run = closed_loop(target, args.connections, args.duration)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run)
    print(result.to_line(), flush=True)
    return 0


async def run_paced(
    one: Callable[[float], Coroutine[Any, Any, None]], started: float, rate: float, count: int
) -> None:
    """Start `one(due)` for each of `count` due times `started + i / rate`, from a pacing
    thread (time.sleep is µs-precise; the loop's timers are not), then wait for them."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def launch(due: float) -> None:
        task = loop.create_task(one(due))
        pending.add(task)
        task.add_done_callback(pending.discard)

    def tick() -> None:
        for i in range(count):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            loop.call_soon_threadsafe(launch, due)

    await asyncio.to_thread(tick)
    await asyncio.sleep(0)  # let the last launch callbacks run
    if pending:
        await asyncio.wait(set(pending), timeout=REQUEST_TIMEOUT + 1)


if __name__ == "__main__":
    sys.exit(main())
