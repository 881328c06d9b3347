"""The dashboard's page, files and event stream on a running mailmux, over real sockets.

mailmux runs in-process with sandbox vendors `a` and `b` (as in test_admin.py),
or in front of emulators where a vendor has to fail (spool depth, last error).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dashboard_kit import EventStream, open_stream
from shaped_kit import CLIENT_KEY as SHAPED_CLIENT_KEY
from shaped_kit import router
from test_admin import ADMIN_KEY, CLIENT_KEY, config, running, url
from yarl import URL

from mailmux.app import App
from mailmux.ingress.dashboard import MAX_STREAMS, STATIC_TYPES
from mailmux.traffic import WINDOW

UPLOT_VERSION = "1.6.32"
MESSAGE = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose requests may stay open (a stream) but not hang a test."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield http


async def send(app: App, n: int, key: str = CLIENT_KEY) -> Counter[str]:
    """Send `n` messages; how many each vendor took."""
    routed: Counter[str] = Counter()
    async with session() as http:
        for _ in range(n):
            async with http.post(
                f"{url(app)}/v1/messages", json=MESSAGE, headers={"Authorization": f"Bearer {key}"}
            ) as answer:
                body = await answer.json()
                routed[body["vendor"] or "-"] += 1
    return routed


def totals(series: dict[str, list[int]]) -> Counter[str]:
    return Counter({vendor: sum(counts) for vendor, counts in series.items()})


async def test_the_page_and_its_files_are_served_with_their_types(tmp_path: Path) -> None:
    async with running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app, session() as http:
        async with http.get(f"{url(app)}/dashboard") as page:  # public: it holds no data
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            html = await page.text()
        assert "{{assets}}" not in html
        for name, content_type in STATIC_TYPES.items():
            assert f'src="dashboard/static/{name}?v=' in html or (
                f'href="dashboard/static/{name}?v=' in html
            )
            async with http.get(f"{url(app)}/dashboard/static/{name}") as answer:
                assert answer.status == 200, name
                assert answer.content_type == content_type
                assert answer.charset == "utf-8"
                assert "immutable" in answer.headers["Cache-Control"]
                body = await answer.text()
                assert body
        async with http.get(f"{url(app)}/dashboard/static/uPlot.iife.min.js") as answer:
            assert (await answer.text()).startswith(
                f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */"
            )


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/dashboard.html",  # package data, but not a static file
        "/dashboard/static/uplot%2FLICENSE",
        "/dashboard/static/..%2Fdashboard.py",
        "/dashboard/static/..%2F..%2Fapp.py",
        "/dashboard/static/%2E%2E/admin.py",
        "/dashboard/static/",
    ],
)
async def test_only_the_known_files_are_served(tmp_path: Path, path: str) -> None:
    async with (
        running(config(tmp_path)) as app,
        session() as http,
        http.get(URL(f"{url(app)}{path}", encoded=True)) as answer,
    ):
        assert answer.status == 404
        assert b"import" not in await answer.read()


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 401), ("wrong-key", 401), (CLIENT_KEY, 403), (ADMIN_KEY, 200)],
)
async def test_the_stream_takes_admin_keys_only(
    tmp_path: Path, key: str | None, status: int
) -> None:
    async with (
        running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app,
        session() as http,
        open_stream(http, url(app), key) as stream,
    ):
        assert stream.response.status == status
        if status == 200:
            assert stream.response.content_type == "text/event-stream"
            assert (await stream.next()) is not None
        else:
            assert stream.response.content_type == "application/json"
            assert "admin key" in (await stream.response.json())["error"]["message"]


async def test_without_admin_keys_the_stream_is_open_on_loopback_only(tmp_path: Path) -> None:
    async with (
        running(config(tmp_path)) as app,
        session() as http,
        open_stream(http, url(app)) as stream,
    ):
        assert stream.response.status == 200
        event = await stream.next()
        assert event is not None and event.name == "snapshot"
    async with (
        running(config(tmp_path, listen="0.0.0.0:0")) as app,
        session() as http,
        open_stream(http, url(app)) as stream,
    ):
        assert stream.response.status == 403
        assert "needs admin_keys" in (await stream.response.json())["error"]["message"]


@pytest.mark.parametrize("metrics", [True, False])
async def test_the_snapshot_and_the_ticks_count_every_accepted_message(
    tmp_path: Path, metrics: bool
) -> None:
    async with running(config(tmp_path, metrics={"enabled": metrics})) as app:
        before = await send(app, 30)
        assert before["a"] > 0 and before["b"] > 0
        # The snapshot holds whole seconds only: let the one the last message went in end.
        await asyncio.sleep(int(time.time()) + 1.05 - time.time())
        async with session() as http, open_stream(http, url(app)) as stream:
            snapshot = (await stream.until("snapshot")).data
            assert stream.comments == ["mailmux dashboard"]  # sent first, before any data
            assert [v["name"] for v in snapshot["vendors"]] == ["a", "b"]
            assert snapshot["window"] == WINDOW
            assert set(snapshot["series"]) == {"a", "b"}
            # From the node's start (not yet 15 minutes ago) to the last whole second.
            charted = len(snapshot["series"]["a"])
            assert 0 < charted < WINDOW and len(snapshot["series"]["b"]) == charted
            assert snapshot["start"] + charted == int(snapshot["now"])
            assert totals(snapshot["series"]) == before
            first = snapshot["vendors"][0]
            assert first["state"] == "healthy" and first["configured_weight"] == 50.0
            assert first["latency_p50_ms"] is not None and first["latency_p90_ms"] is not None
            assert snapshot["spool"] == {"depth": 0, "oldest_age_seconds": None}
            assert snapshot["status"] == "ok"
            assert snapshot["config"]["reload_error"] is None  # no reload was refused

            # The snapshot and the ticks after it cover consecutive seconds, each once.
            seen = totals(snapshot["series"])
            end = snapshot["start"] + charted
            during = await send(app, 20)
            ticks = 0
            while seen != before + during:
                tick = (await stream.until("tick")).data
                assert tick["start"] == end, "a tick repeats or skips a second"
                end += len(tick["series"]["a"])
                seen += totals(tick["series"])
                ticks += 1
                assert ticks <= 5, f"{seen} counted, {before + during} sent"
            assert [v["name"] for v in tick["vendors"]] == ["a", "b"]
            assert "spool" in tick and "status" in tick


async def test_the_spool_and_last_errors_show_when_vendors_fail(tmp_path: Path) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux:
        for name in ("a", "b"):
            await mux.faults(name, {"status": 503})
        async with session() as http:
            async with http.post(
                f"{mux.url}/v1/messages",
                json=MESSAGE,
                headers={"Authorization": f"Bearer {SHAPED_CLIENT_KEY}"},
            ) as answer:
                assert answer.status == 202  # queued: no vendor took it
            async with open_stream(http, mux.url) as stream:
                snapshot = (await stream.until("snapshot")).data
                assert snapshot["spool"]["depth"] == 1
                assert snapshot["spool"]["oldest_age_seconds"] >= 0
                errors = {v["name"]: v["last_error"] for v in snapshot["vendors"]}
                assert all(e and e.startswith("retriable: ") for e in errors.values()), errors
                assert sum(totals(snapshot["series"]).values()) == 0  # nothing accepted


async def test_an_override_arrives_as_a_notice_and_shows_in_the_next_tick(tmp_path: Path) -> None:
    async with (
        running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app,
        session() as http,
        open_stream(http, url(app), ADMIN_KEY) as stream,
    ):
        snapshot = (await stream.until("snapshot")).data
        assert snapshot["notices"] == []
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        body = {"kind": "drain", "vendor": "a", "reason": "a is slow"}
        async with http.post(f"{url(app)}/admin/v1/overrides", json=body, headers=auth) as answer:
            assert answer.status == 201
        notice = (await stream.until("notice")).data
        assert (notice["kind"], notice["vendor"]) == ("override", "a")
        assert notice["at"] <= time.time()
        tick = (await stream.until("tick")).data
        a = tick["vendors"][0]
        assert (a["name"], a["weight"], a["share"]) == ("a", 0.0, 0.0)
        assert [(o["kind"], o["reason"]) for o in a["overrides"]] == [("drain", "a is slow")]
    # A dashboard opened later finds the notice among the recent ones.
    async with (
        running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app,
        session() as http,
        open_stream(http, url(app), ADMIN_KEY) as stream,
    ):
        snapshot = (await stream.until("snapshot")).data
        # The override was kept in the store, its notice is this node's past.
        assert [o["kind"] for o in snapshot["vendors"][0]["overrides"]] == ["drain"]


async def test_recent_notices_are_in_the_snapshot(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as app, session() as http:
        async with http.post(
            f"{url(app)}/admin/v1/overrides", json={"kind": "drain", "vendor": "a"}
        ) as answer:
            assert answer.status == 201
        async with http.post(
            f"{url(app)}/admin/v1/overrides", json={"kind": "weights", "weights": {"b": 5}}
        ) as answer:
            assert answer.status == 201
        async with open_stream(http, url(app)) as stream:
            snapshot = (await stream.until("snapshot")).data
        notices: list[dict[str, Any]] = snapshot["notices"]
        assert [(n["kind"], n["vendor"]) for n in notices] == [("override", "a"), ("override", "b")]


async def test_stop_ends_open_streams_at_once(tmp_path: Path) -> None:
    app = App(config(tmp_path))
    await app.start()
    stopped = False
    try:
        async with session() as http, open_stream(http, url(app)) as stream:
            assert (await stream.until("snapshot")).name == "snapshot"
            started = time.monotonic()
            await asyncio.wait_for(app.stop(), timeout=5)
            stopped = True
            took = time.monotonic() - started
            assert took < 1.0, f"stop took {took:.2f} s with a dashboard open"
            ended: list[str] = []
            while (event := await stream.next(timeout=2)) is not None:
                ended.append(event.name)
            assert set(ended) <= {"tick"}  # at most a tick already under way, then the end
    finally:
        if not stopped:
            await app.stop()


async def test_streams_are_capped_and_a_closed_one_frees_its_place(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as app, session() as http:
        streams: list[EventStream] = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(MAX_STREAMS):
                stream = await stack.enter_async_context(open_stream(http, url(app)))
                assert stream.response.status == 200
                await stream.until("snapshot")
                streams.append(stream)
            async with open_stream(http, url(app)) as extra:
                assert extra.response.status == 503
                assert (await extra.response.json())["error"]["code"] == "too_many_streams"
                assert extra.response.headers["Retry-After"] == "5"
            streams[0].response.close()  # this client goes away
            deadline = time.monotonic() + 5
            while True:  # mailmux notices at its next write to it, within a second
                async with open_stream(http, url(app)) as again:
                    if again.response.status == 200:
                        assert (await again.until("snapshot")).name == "snapshot"
                        break
                    assert again.response.status == 503
                assert time.monotonic() < deadline, "a closed stream kept its place"
                await asyncio.sleep(0.1)
