"""The listening socket: one `BoundedRequestHandler` per accepted connection.

`web.TCPSite` would hand every connection to aiohttp's own `RequestHandler`;
`Listener` binds the socket itself with a protocol factory that builds
mailmux's subclass around the runner's `web.Server`, so the runner still
dispatches requests and drains connections on `runner.cleanup()`.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from mailmux.ingress.server import BoundedRequestHandler, ConnectionCount, ServerLimits
from mailmux.ingress.throttle import ThrottledLog

log = logging.getLogger("mailmux.server")

#: At most this many lines about misbehaving clients per LOG_INTERVAL seconds.
LOG_LINES = 20
LOG_INTERVAL = 60.0

#: Files a mailmux process needs besides its clients' connections: vendor pools, the spool.
SPARE_FILES = 1024


def fit_file_limit(connections: int, *, spare: int = SPARE_FILES) -> int | None:
    """Raise the soft open-file limit so `connections` sockets fit; None if they do.

    Past the limit, accept() fails with EMFILE and asyncio stops accepting
    for a while, logging each time: the connection cap would never apply.
    Returns the soft limit still in force when the hard limit is too low.
    """
    if sys.platform == "win32":
        return None
    import resource

    wanted = connections + spare
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    return None if target >= wanted else target


class Listener:
    """The listening socket of one `web.AppRunner`, with `BoundedRequestHandler`s.

    runner = web.AppRunner(app)
    await runner.setup()
    listener = Listener(runner, ServerLimits(header_timeout=5.0))
    await listener.start("127.0.0.1", 8025)
    ...
    await listener.close()  # stop accepting; then runner.cleanup() drains the rest
    """

    def __init__(self, runner: web.BaseRunner, limits: ServerLimits) -> None:
        self._runner = runner
        self.limits = limits
        self.count = ConnectionCount(limits.max_connections)
        self._server: asyncio.AbstractServer | None = None
        self._throttle: ThrottledLog | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        if manager is None:
            raise RuntimeError("call runner.setup() before starting a listener")
        throttle = ThrottledLog(
            log, lines=LOG_LINES, interval=LOG_INTERVAL, call_later=loop.call_later
        )
        self._throttle = throttle

        def protocol() -> BoundedRequestHandler:
            return BoundedRequestHandler(
                manager, loop=loop, limits=self.limits, count=self.count, throttle=throttle
            )

        server = await loop.create_server(protocol, host, port, backlog=backlog)
        self._server = server
        sockets = server.sockets
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def close(self) -> None:
        """Stop accepting connections; open ones are the runner's to finish."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._throttle is not None:
            self._throttle.flush()
