"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

mailmux runs in front of two emulated ESPs under steady traffic; the page
must show both vendors and chart both; Drain on one must show, in the
chart's own data, that vendor's rate falling to zero while the other's
rises. The screenshots (desktop and phone width) are kept as test artifacts
in `$MAILMUX_ARTIFACTS` (default `artifacts/` at the repository root).

No browser is downloaded: Playwright launches `/usr/bin/chromium`, which
`.ci/run` installs when it is absent. Without it the test is skipped,
except on CI, where it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright
from shaped_kit import CLIENT_KEY, Router, router

CHROMIUM = Path("/usr/bin/chromium")
ADMIN_KEY = "admin-key-4567"
RATE = 40.0  # messages per second, in total
MAX_SECONDS = 30.0  # the traffic stops by itself after this long
RECENT = 3  # seconds of the chart compared before and after the drain
MESSAGE = {"from": "app@shop.example", "to": ["user@example.net"], "subject": "s", "text": "t"}


def artifacts() -> Path:
    folder = Path(os.environ.get("MAILMUX_ARTIFACTS") or Path(__file__).parent.parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as playwright:
        # A container has no user namespaces for Chromium's sandbox.
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def steady_traffic(mux: Router) -> AsyncIterator[None]:
    """`RATE` messages per second to the native API, for at most `MAX_SECONDS`."""

    async def send() -> None:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            for i in range(int(RATE * MAX_SECONDS)):
                delay = started + i / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing, not synchronization
                async with http.post(f"{mux.url}/v1/messages", json=MESSAGE, headers=headers) as r:
                    assert r.status == 200, await r.text()

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def series(page: Page) -> dict[str, list[list[int]]]:
    found: dict[str, list[list[int]]] = await page.evaluate("window.mailmuxDashboard.series()")
    return found


def recent(points: list[list[int]]) -> list[int]:
    """The counts of the last `RECENT` seconds charted."""
    return [count for _, count in points[-RECENT:]]


async def wait_for(page: Page, what: str, ok: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Poll the chart's data until `ok(series)`; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        data = await series(page)
        if data and ok(data):
            return data
        assert time.monotonic() < deadline, f"{what}: the chart shows {data}"
        await asyncio.sleep(0.2)


def errors_of(page: Page) -> list[str]:
    """What the page logged as errors (a script error, a file refused by the CSP)."""
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


async def test_drain_in_the_dashboard_moves_the_chart(tmp_path: Path, browser: Browser) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux, steady_traffic(mux):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors = errors_of(page)
        await page.goto(f"{mux.url}/dashboard")
        for name in ("a", "b"):
            card = page.locator(f'.vendor[data-vendor="{name}"]')
            await card.locator("h3", has_text=name).wait_for()
        await page.locator("#connection", has_text="live").wait_for()

        before = await wait_for(
            page,
            "both vendors take traffic",
            # Whole seconds of steady traffic, about RATE / 2 each (not the first, partial one).
            lambda s: all(len(s[v]) > RECENT and min(recent(s[v])) >= RATE / 4 for v in ("a", "b")),
        )
        b_before = sum(recent(before["b"])) / RECENT

        await page.click('button[data-action="drain"][data-vendor="a"]')
        await page.locator('.vendor[data-vendor="a"] .badge.drained').wait_for()
        after = await wait_for(
            page,
            "a falls to zero while b rises",
            lambda s: recent(s["a"]) == [0] * RECENT and min(recent(s["b"])) >= b_before + RATE / 4,
        )
        assert await page.locator('.vendor[data-vendor="a"] .weight').inner_text() == (
            "0 effective (0 %), 1 configured"
        )
        await page.screenshot(path=str(artifacts() / "dashboard.png"), full_page=True)
        assert "drain a" in await page.locator("#events").inner_text()
        assert errors == []

        # A change mailmux refuses shows its reason (422: no vendor left to route to).
        await page.fill('.vendor[data-vendor="b"] .weight-input', "0")
        await page.click('button[data-action="weight"][data-vendor="b"]')
        refusal = page.locator("#action-error")
        await refusal.wait_for()
        assert "no vendor would be left with a weight above 0" in await refusal.inner_text()
        assert [e for e in errors if "422" not in e] == []  # Chromium logs the refused request
    b_after = sum(recent(after["b"])) / RECENT
    print(f"\nb charted {b_before:.1f} msg/s before the drain, {b_after:.1f} after")


async def test_the_dashboard_fits_a_phone(tmp_path: Path, browser: Browser) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux, steady_traffic(mux):
        page = await browser.new_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
        )
        errors = errors_of(page)
        await page.goto(f"{mux.url}/dashboard")
        await page.locator('.vendor[data-vendor="b"]').wait_for()
        await wait_for(
            page,
            "traffic is charted",  # the first update may come before any second is charted
            lambda s: len(s["a"]) >= RECENT and min(recent(s["a"])) > 0,
        )
        canvas = await page.locator("#chart canvas").bounding_box()
        assert canvas is not None and canvas["width"] <= 390
        await page.screenshot(path=str(artifacts() / "dashboard-phone.png"), full_page=True)
        width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"scrolls sideways: {width[0]} px wide in {width[1]} px"
        assert errors == []


async def test_the_page_asks_for_the_admin_key(tmp_path: Path, browser: Browser) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}, admin_keys=[ADMIN_KEY]) as mux:
        page = await browser.new_page()
        await page.goto(f"{mux.url}/dashboard")
        form = page.locator("#key-form")
        await form.wait_for()
        assert "admin key" in await page.locator("#key-reason").inner_text()
        await page.fill("#key-input", ADMIN_KEY)
        await page.click("#key-form button")
        await page.locator("#connection", has_text="live").wait_for()
        assert await form.is_hidden()
        await page.click('button[data-action="drain"][data-vendor="b"]')  # sent with the key
        await page.locator('.vendor[data-vendor="b"] .badge.drained').wait_for()
        assert [(r.vendor, r.weight) for r in mux.app.deliverer.routes] == [("a", 1.0), ("b", 0.0)]


async def test_a_refused_reload_is_shown_as_a_banner(tmp_path: Path, browser: Browser) -> None:
    """A config file refused by a real reload: the banner names the file and every error."""
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux:
        broken = tmp_path / "mailmux.yaml"
        broken.write_text("vendors:\n  a: {kind: sendgrid, weight: -1}\ncolour: blue\n")
        mux.app.reloader.path = broken
        refused = await mux.app.reloader.reload("api")
        assert not refused.ok and len(refused.errors) >= 2
        page = await browser.new_page()
        await page.goto(f"{mux.url}/dashboard")
        banner = page.locator("#reload-error")
        await banner.wait_for()
        shown = await banner.inner_text()
        assert str(broken) in shown
        assert all(error in shown for error in refused.errors), (shown, refused.errors)
