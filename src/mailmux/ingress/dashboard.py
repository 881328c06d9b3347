"""The live dashboard: `/dashboard`, its static files, and its event stream.

The page and its scripts are package data (`dashboard_static/`), read once
when the node starts and served from memory: there is nothing to build at
install time. The page holds no data, so it is public; everything it shows
comes over `GET /dashboard/stream`, a Server-Sent Events stream that needs
what the admin API needs (`AdminApi.who`): an admin key when `admin_keys`
are configured, else a loopback listener. The page reads the stream with
`fetch()` so that it can send the `Authorization` header, which
`EventSource` cannot.

The stream's events:

- `snapshot`, first: the last 15 minutes of accepted messages per vendor
  per second (`TrafficHistory.series`), the vendors, the spool, the recent
  notices and the config's reload state (when the status has one);
- `tick`, at each new second: the seconds completed since the last event,
  the vendors, the spool and the config again (the ticks are the heartbeat:
  no proxy sees the stream idle for more than a second);
- `notice`, as each notice is published (`NoticeBoard.subscribe`).

What a tick says besides the counts is read once per second for all open
streams together (`_Sampler`), so each dashboard costs the node one write
per second; at most `MAX_STREAMS` streams are open at once, beyond that the
stream answers 503. When the node stops (`on_shutdown`) every stream ends
at once, and a client that stops reading is cut off after `WRITE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from mailmux.ingress.admin import AdminApi
from mailmux.ingress.errors import error_response
from mailmux.notices import Notice, NoticeBoard, Subscription
from mailmux.traffic import TrafficHistory

#: Open streams beyond which a new one is refused with 503.
MAX_STREAMS = 32
#: Seconds a write to a stream may wait for a client that does not read before it is cut off.
WRITE_TIMEOUT = 10.0
#: Seconds past each whole second before its tick is sent: attempts that end in the second
#: that just closed have been counted by then.
TICK_LAG = 0.05

#: The files under `/dashboard/static/`, with their content types.
STATIC_TYPES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}
PAGE = "dashboard.html"
#: In the page, stands for a digest of the static files: a new release changes their URLs,
#: so they can be cached for a year.
ASSETS_TOKEN = "{{assets}}"

#: The page is an operator's console: no framing by other sites, no third-party loads.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each event on as it is written
}


@dataclass(frozen=True, slots=True)
class DashboardContext:
    """What the dashboard reads; built by the app."""

    traffic: TrafficHistory
    notices: NoticeBoard
    status: Callable[[], Awaitable[dict[str, Any]]]
    queue_summary: Callable[[], Awaitable[tuple[int, float | None]]]
    admin: AdminApi  # its guard and its vendors report
    clock: Callable[[], float] = time.time
    max_streams: int = MAX_STREAMS


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event (orjson writes no newline, so the data is one line)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def load_static() -> tuple[bytes, dict[str, bytes]]:
    """The page, with its asset URLs made unique to this release, and the static files."""
    folder = resources.files("mailmux.ingress") / "dashboard_static"
    files = {name: (folder / name).read_bytes() for name in STATIC_TYPES}
    digest = hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()[:16]
    page = (folder / PAGE).read_bytes().replace(ASSETS_TOKEN.encode(), digest.encode())
    return page, files


class _Sampler:
    """The vendors, spool and config, read at most once per second for every stream."""

    def __init__(self, ctx: DashboardContext) -> None:
        self._ctx = ctx
        self._lock = asyncio.Lock()
        self._second: int | None = None
        self._state: dict[str, Any] = {}

    async def state(self) -> dict[str, Any]:
        async with self._lock:
            second = int(self._ctx.clock())
            if second != self._second:
                self._state = await self._read()
                self._second = second
            return self._state

    async def _read(self) -> dict[str, Any]:
        ctx = self._ctx
        status = await ctx.status()
        report = ctx.admin.vendors_report(status)
        latency = {v["name"]: v for v in status["vendors"]}
        vendors = [
            {
                **v,
                "latency_p50_ms": latency[v["name"]]["latency_p50_ms"],
                "latency_p90_ms": latency[v["name"]]["latency_p90_ms"],
            }
            for v in report["vendors"]
        ]
        depth, oldest = await ctx.queue_summary()
        age = None if oldest is None else max(0.0, ctx.clock() - oldest)
        return {
            "status": status["status"],
            "vendors": vendors,
            "spool": {"depth": depth, "oldest_age_seconds": age},
            # The config file and its last reload, where the status reports one.
            "config": report.get("config", status.get("config")),
        }


class Dashboard:
    """The dashboard's routes; `on_shutdown` ends its streams when the node stops."""

    def __init__(self, ctx: DashboardContext) -> None:
        self.ctx = ctx
        self._page, self._files = load_static()
        self._sampler = _Sampler(ctx)
        self._stopping = asyncio.Event()
        self._open = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/dashboard", self.get_page),
            web.get("/dashboard/static/{name}", self.get_static),
            web.get("/dashboard/stream", self.get_stream),
        ]

    async def on_shutdown(self, app: web.Application) -> None:
        """The node is stopping: every open stream ends now, none may start."""
        self._stopping.set()

    async def get_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    async def get_static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._files.get(name)
        if body is None:  # only the known files: nothing else under the package is reachable
            return error_response(404, "not_found", "no such dashboard file")
        return web.Response(
            body=body, content_type=STATIC_TYPES[name], charset="utf-8", headers=STATIC_HEADERS
        )

    async def get_stream(self, request: web.Request) -> web.StreamResponse:
        who = self.ctx.admin.who(request)
        if isinstance(who, web.Response):
            return who
        if self._stopping.is_set():
            return error_response(503, "stopping", "mailmux is stopping")
        if self._open >= self.ctx.max_streams:
            return error_response(
                503,
                "too_many_streams",
                f"{self.ctx.max_streams} dashboards are open on this node; close one",
                headers={"Retry-After": "5"},
            )
        self._open += 1
        try:
            return await self._stream(request)
        finally:
            self._open -= 1

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        with self.ctx.notices.subscribe() as subscription:
            try:
                await self._feed(response, subscription)
            except (ConnectionResetError, TimeoutError):  # the client left, or stopped reading
                if request.transport is not None:
                    request.transport.close()
        return response

    async def _feed(self, response: web.StreamResponse, subscription: Subscription) -> None:
        """Write the snapshot, then ticks and notices until the node stops."""
        ctx = self.ctx
        state = await self._sampler.state()
        now = ctx.clock()
        start, series = ctx.traffic.series(now)
        snapshot = {
            "now": now,
            "window": ctx.traffic.window,
            "start": start,
            "series": series,
            "notices": [n.to_json() for n in ctx.notices.recent()],
            **state,
        }
        subscription.take()  # these are among the snapshot's recent notices
        await self._write(response, b": mailmux dashboard\n\n" + sse("snapshot", snapshot))
        seen = int(now)  # the series ends with the second before `seen`
        next_tick = seen + 1 + TICK_LAG
        notice = asyncio.ensure_future(subscription.get())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                now = ctx.clock()
                if now >= next_tick:
                    seen = await self._tick(response, seen, now)
                    next_tick = int(now) + 1 + TICK_LAG
                    continue
                done, _ = await asyncio.wait(
                    (notice, stopping), timeout=next_tick - now, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    return
                if notice in done:
                    await self._notices(response, [notice.result(), *subscription.take()])
                    notice = asyncio.ensure_future(subscription.get())
        finally:
            notice.cancel()
            stopping.cancel()

    async def _tick(self, response: web.StreamResponse, seen: int, now: float) -> int:
        """Send the seconds completed since `seen` with the current state; the new `seen`."""
        start, series = self.ctx.traffic.series(now, since=seen)
        tick = {"now": now, "start": start, "series": series, **await self._sampler.state()}
        await self._write(response, sse("tick", tick))
        return int(now)

    async def _notices(self, response: web.StreamResponse, notices: list[Notice]) -> None:
        await self._write(response, b"".join(sse("notice", n.to_json()) for n in notices))

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await response.write(data)
