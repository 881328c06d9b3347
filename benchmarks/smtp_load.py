"""A lean SMTP load generator: persistent sessions, each sending message after message.

Run as its own process (pinned to the load core) and print one
`BENCH_RESULT {json}` line, as benchmarks/loadgen.py does, so the
orchestrator reads both alike (`LoadResult`; "status" is the final reply's
code, 250 the success).

Each session connects once (EHLO, and STARTTLS, EHLO, AUTH PLAIN when asked)
and then loops RSET / MAIL / RCPT / DATA / content: how a service's mail
library reuses a submission connection. A message's latency runs from its
RSET to the final reply. The commands go in lockstep, one reply before the
next command, unless the server advertises PIPELINING (RFC 2920): then RSET,
MAIL, RCPT and DATA go in one write. The client is raw asyncio streams, not
aiosmtplib: it shares a core with the emulator, so every microsecond it
spends is taken from the stack it measures.

Closed loop (`--sessions` only): every session sends its next message as
soon as the last one is answered. Open loop (`--rate`): message i is due at
start + i / rate, paced by a thread as in loadgen.py; it waits for an idle
session, and its latency counts from its due time (no coordinated omission).
A non-250 final reply counts as `unexpected`, a broken session as an error
(the session reconnects); the first few refusals are printed, for the
orchestrator's error message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadgen import REQUEST_TIMEOUT, LoadResult, Tally, run_paced

ACCEPTED = 250
#: Refusals printed in full before the rest are only counted.
SHOWN_REFUSALS = 3


class SessionBroken(ConnectionError):
    """The session cannot go on: a reply the next command cannot follow, or a closed socket."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What every session sends and how it logs in; `data` is dot-stuffed and terminated."""

    host: str
    port: int
    mail_from: str
    rcpt_to: str
    data: bytes
    tls: ssl.SSLContext | None
    user: str | None
    password: str | None

    @staticmethod
    def content(raw: bytes) -> bytes:
        """RFC 5321 §4.5.2: CRLF line ends, a leading dot doubled, CRLF.CRLF at the end."""
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
        return b"\r\n".join(stuffed) + b"\r\n.\r\n"


class Session:
    """One SMTP connection, ready for transactions once `open()` returned."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pipelining = False
        self._transaction = (
            b"RSET\r\n",
            f"MAIL FROM:<{plan.mail_from}> SIZE={len(plan.data)}\r\n".encode(),
            f"RCPT TO:<{plan.rcpt_to}>\r\n".encode(),
            b"DATA\r\n",
        )

    async def open(self) -> None:
        plan = self.plan
        self.reader, self.writer = await asyncio.open_connection(plan.host, plan.port)
        await self._expect(220)
        extensions = await self._ehlo()
        if plan.tls is not None:
            await self._command(b"STARTTLS\r\n", 220)
            await self.writer.start_tls(plan.tls, server_hostname=plan.host)
            extensions = await self._ehlo()
        if plan.user is not None and plan.password is not None:
            token = base64.b64encode(f"\0{plan.user}\0{plan.password}".encode()).decode()
            await self._command(f"AUTH PLAIN {token}\r\n".encode(), 235)
        self.pipelining = "PIPELINING" in extensions

    async def send(self) -> tuple[int, str]:
        """One transaction; the final reply's code and text (a refusal of MAIL/RCPT/DATA
        ends the transaction there, with that reply)."""
        assert self.writer is not None
        if self.pipelining:
            self.writer.write(b"".join(self._transaction))
            replies = [await self._reply() for _ in self._transaction]
        else:
            replies = []
            for command in self._transaction:
                self.writer.write(command)
                replies.append(await self._reply())
                if replies[-1][0] >= 400:
                    break
        for (code, text), wanted in zip(replies, (250, 250, 250, 354), strict=False):
            if code != wanted:
                if replies[-1][0] == 354:  # pipelined DATA went ahead: end it empty
                    self.writer.write(b".\r\n")
                    await self._reply()
                return code, text
        self.writer.write(self.plan.data)
        return await self._reply()

    async def close(self) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self._reply(), 1.0)
        self.abort()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None

    async def _ehlo(self) -> set[str]:
        assert self.writer is not None
        self.writer.write(b"EHLO bench.client\r\n")
        code, text = await self._reply()
        if code != 250:
            raise SessionBroken(f"EHLO: {code} {text}")
        return {line.split(" ", 1)[0].upper() for line in text.splitlines()}

    async def _command(self, line: bytes, wanted: int) -> None:
        assert self.writer is not None
        self.writer.write(line)
        await self._expect(wanted, line.split(b" ", 1)[0].decode().strip())

    async def _expect(self, wanted: int, what: str = "banner") -> None:
        code, text = await self._reply()
        if code != wanted:
            raise SessionBroken(f"{what}: {code} {text}")

    async def _reply(self) -> tuple[int, str]:
        """A (possibly multi-line) reply: its code and its lines' text."""
        assert self.reader is not None
        lines = []
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if len(line) < 5 or not line[:3].isdigit():
                raise SessionBroken(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:-2].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)


class Run:
    """Counts of one run, and the refusals worth showing."""

    def __init__(self) -> None:
        self.tally = Tally(ACCEPTED)
        self.shown = 0

    def reply(self, code: int, text: str, latency: float) -> None:
        self.tally.response(code, latency)
        if code != ACCEPTED and self.shown < SHOWN_REFUSALS:
            self.shown += 1
            print(f"refused: {code} {' '.join(text.split())}", file=sys.stderr, flush=True)

    def broken(self, error: BaseException) -> None:
        self.tally.errors += 1
        if self.shown < SHOWN_REFUSALS:
            self.shown += 1
            print(f"session broken: {error!r}", file=sys.stderr, flush=True)


_FAILURES = (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError)


async def opened(plan: Plan) -> Session:
    session = Session(plan)
    await asyncio.wait_for(session.open(), REQUEST_TIMEOUT)
    return session


async def transact(session: Session, run: Run, since: float) -> bool:
    """One message on `session`, recorded in `run`; False when the session broke."""
    try:
        code, text = await asyncio.wait_for(session.send(), REQUEST_TIMEOUT)
    except _FAILURES as err:
        run.broken(err)
        session.abort()
        return False
    run.reply(code, text, time.perf_counter() - since)
    return True


async def closed_loop(plan: Plan, sessions: int, duration: float, count: int | None) -> LoadResult:
    """`sessions` sessions, each sending its next message as soon as the last is answered
    (for `duration` seconds, or `count` messages each)."""
    run = Run()
    opened_sessions = await asyncio.gather(*(opened(plan) for _ in range(sessions)))
    started = time.perf_counter()
    stop_at = started + duration

    async def worker(session: Session) -> None:
        sent = 0
        while time.perf_counter() < stop_at and (count is None or sent < count):
            sent += 1
            if not await transact(session, run, time.perf_counter()):
                try:
                    session = await opened(plan)
                except _FAILURES as err:
                    run.broken(err)
                    return
        await session.close()

    await asyncio.gather(*(worker(s) for s in opened_sessions))
    return run.tally.result(time.perf_counter() - started, with_lag=False)


async def open_loop(plan: Plan, sessions: int, rate: float, duration: float) -> LoadResult:
    """A message due every 1 / rate seconds, each taking an idle session; latency from due."""
    run = Run()
    idle: asyncio.LifoQueue[Session] = asyncio.LifoQueue()
    for session in await asyncio.gather(*(opened(plan) for _ in range(sessions))):
        idle.put_nowait(session)
    count = max(1, round(rate * duration))
    started = time.perf_counter() + 0.05

    async def one(due: float) -> None:
        session = await idle.get()
        run.tally.lags.append(time.perf_counter() - due)
        if not await transact(session, run, due):
            try:
                session = await opened(plan)
            except _FAILURES as err:
                run.broken(err)
                return
        idle.put_nowait(session)

    await run_paced(one, started, rate, count)
    duration_s = time.perf_counter() - started
    while not idle.empty():
        await idle.get_nowait().close()
    return run.tally.result(duration_s, with_lag=True)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--message-file", type=Path, required=True, help="RFC 5322 bytes")
    parser.add_argument("--mail-from", required=True)
    parser.add_argument("--rcpt-to", required=True)
    parser.add_argument("--sessions", type=int, default=16, help="persistent SMTP sessions")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--rate", type=float, help="open loop: messages per second")
    parser.add_argument("--count", type=int, help="closed loop: stop after N messages a session")
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--cafile", help="the server certificate to trust (with --starttls)")
    parser.add_argument("--user", help="AUTH PLAIN user (with --password)")
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    if args.rate is not None and args.count is not None:
        parser.error("--count is for the closed loop; --rate is the open loop")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    tls = ssl.create_default_context(cafile=args.cafile) if args.starttls else None
    plan = Plan(
        args.host,
        args.port,
        args.mail_from,
        args.rcpt_to,
        Plan.content(args.message_file.read_bytes()),
        tls,
        args.user,
        args.password,
    )
    if args.rate is not None:
        run = open_loop(plan, args.sessions, args.rate, args.duration)
    else:
        run = closed_loop(plan, args.sessions, args.duration, args.count)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run)
    print(result.to_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
