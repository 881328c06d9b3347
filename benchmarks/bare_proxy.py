"""The baseline: a bare pass-through proxy on mailmux's own stack.

aiohttp server + one shared aiohttp ClientSession + uvloop, like mailmux,
doing only what any proxy in front of an ESP must do: read the body, forward
it with the caller's credentials, hand back the ESP's status and body (the
Cloudflare-worker `return fetch(request)` shape). mailmux's throughput as a
share of this one's is then the cost of mailmux's own work — validation,
routing, health, the spool write — and not of the stack both stand on.

The upstream body is read whole before answering rather than streamed chunk
by chunk: the ESP's answer is a few bytes, and a known Content-Length is what
mailmux sends too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web

#: Request headers the ESP needs; everything else (Host, Content-Length) aiohttp sets.
FORWARDED = ("Authorization", "Content-Type", "Accept")
#: Response headers worth handing back: the vendor message id and the body's type.
RETURNED = ("Content-Type", "X-Message-Id")
LISTENING = "bare proxy listening on"
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(upstream: str, pool_size: int) -> web.Application:
    """Every POST to `/v3/mail/send` goes to `upstream` (the ESP's full send URL)."""
    app = web.Application()

    async def session(app: web.Application) -> AsyncIterator[None]:
        # Same pool settings as mailmux's vendor transport: no per-host cap, no User-Agent.
        connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",)
        ) as client:
            app[SESSION] = client
            yield

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        async with request.app[SESSION].post(upstream, data=body, headers=headers) as answer:
            payload = await answer.read()
            returned = {name: answer.headers[name] for name in RETURNED if name in answer.headers}
            return web.Response(status=answer.status, body=payload, headers=returned)

    app.cleanup_ctx.append(session)
    app.router.add_post("/v3/mail/send", forward)
    return app


async def serve(host: str, port: int, upstream: str, pool_size: int) -> None:
    """Serve until SIGTERM or SIGINT, announcing the address on stderr once listening."""
    runner = web.AppRunner(build_app(upstream, pool_size), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        print(f"{LISTENING} http://{host}:{port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000/v3/mail/send")
    parser.add_argument("--pool-size", type=int, default=2000)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.host, args.port, args.upstream, args.pool_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
