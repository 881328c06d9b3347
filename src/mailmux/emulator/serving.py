"""Socket and loop plumbing both emulators serve with (the HTTP one and the SMTP one).

Listening sockets are bound synchronously, outside aiohttp's sites and asyncio's
servers, so that an emulator going `down` refuses connections from the moment
it says so, and listens again (into the backlog) on the same port from the
moment it comes back up. Resets use SO_LINGER 0, so a client sees the TCP RST a
crashed server would send rather than an orderly close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
from collections.abc import Callable
from typing import Protocol, cast

#: Largest request (HTTP body or SMTP DATA) read: above every ESP's own limit (SES: 40 MB).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Listen backlog, deep enough for a benchmark's burst of new connections.
BACKLOG = 1024


class Serving(Protocol):
    """An emulator as `run_until_signalled` drives it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound now (SO_REUSEADDR, so the same port binds again at once)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.create_server(address, family=family, backlog=BACKLOG)
    sock.setblocking(False)
    return sock


def reset(transport: asyncio.BaseTransport) -> None:
    """Drop the connection with a TCP reset, as a crashed server would."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # uvloop's transports are not asyncio.Transport subclasses, but all can abort().
    cast(asyncio.Transport, transport).abort()


def run_until_signalled(emulator: Serving, banner: Callable[[], str]) -> None:
    """Serve until SIGINT or SIGTERM; once started, print `banner()` (where it listens)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(emulator, banner))


async def _serve_until_signalled(emulator: Serving, banner: Callable[[], str]) -> None:
    await emulator.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(banner(), flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await emulator.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not built for every platform; the default loop is fine
        return None
    return uvloop.new_event_loop
