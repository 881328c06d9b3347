"""Hot reload of a running mailmux, over real sockets: the admin API, a change on disk, SIGHUP.

mailmux runs in-process from a YAML file in the test's directory, vendors
in front of emulators, while senders keep steady traffic on the native API.
The file is rewritten and reloaded; each test checks what routes afterwards,
what the operator is shown, and that no client request failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from harness import MailmuxProcess, eventually, fast_config
from node_kit import ADMIN_KEY, AUTH, BODY, Node, node

from mailmux import cli
from mailmux.app import App
from mailmux.config import load_config
from mailmux.emulator.faults import Faults
from mailmux.notices import NoticeKind

WAIT = 10.0  # the bound on every wait in these tests


class Traffic:
    """Steady traffic: each sender posts one message after another; every answer is kept."""

    def __init__(self, node: Node, senders: int = 4) -> None:
        self.node = node
        self.routed: list[tuple[float, str]] = []  # (sent at, vendor) of each 200
        self.failed: list[tuple[int, str]] = []  # (status, body) of anything else
        self._tasks = [asyncio.create_task(self._send()) for _ in range(senders)]

    async def _send(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                at = time.monotonic()
                async with http.post(
                    f"{self.node.url}/v1/messages", json=BODY, headers=AUTH
                ) as answer:
                    body = await answer.json()
                    if answer.status == 200 and body["state"] == "sent":
                        self.routed.append((at, body["vendor"]))
                    else:
                        self.failed.append((answer.status, str(body)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def vendors_since(self, since: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for at, vendor in self.routed:
            if at >= since:
                counts[vendor] = counts.get(vendor, 0) + 1
        return counts

    async def flowing(self, since: float, count: int = 40) -> dict[str, int]:
        """Wait until `count` messages sent after `since` were answered; their vendors."""

        async def enough() -> bool:
            return sum(self.vendors_since(since).values()) >= count

        await eventually(enough, timeout=WAIT, what=f"{count} messages after the change")
        return self.vendors_since(since)


async def test_a_weight_change_applies_under_steady_traffic_with_no_failed_request(
    tmp_path: Path,
) -> None:
    async with node(tmp_path, {"a": 70, "b": 30}) as mux:
        traffic = Traffic(mux)
        try:
            before = await traffic.flowing(time.monotonic())
            mux.write({"a": 0, "b": 100})
            status, answer = await mux.reload()
            reloaded = time.monotonic()
            after = await traffic.flowing(reloaded, count=60)
        finally:
            await traffic.stop()
    assert status == 200, answer
    assert answer["result"] == "ok" and answer["changes"]["retuned"] == ["a", "b"]
    assert before.get("a", 0) > 0 and before.get("b", 0) > 0  # the old split routed to both
    assert after == {"b": after["b"]}  # every message planned after the swap went to b
    assert traffic.failed == []


async def test_an_invalid_file_is_refused_with_every_error_and_the_old_split_routes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        traffic = Traffic(mux)
        try:
            text = mux.path.read_text()
            broken = text.replace("weight: 50", "weight: -5", 1) + "colour: blue\n"
            mux.path.write_text(broken)
            status, answer = await mux.reload()
            refused = time.monotonic()
            after = await traffic.flowing(refused, count=60)
            _, vendors = await mux.admin("GET", "vendors")
            code = await asyncio.to_thread(
                cli.main, ["vendors", "--url", mux.url, "--admin-key", ADMIN_KEY]
            )
            shown = capsys.readouterr().out
            mux.path.write_text(text)
            fixed, _ = await mux.reload()
            _, vendors_fixed = await mux.admin("GET", "vendors")
        finally:
            await traffic.stop()
    assert status == 422
    assert answer["error"]["code"] == "invalid_config"
    assert str(mux.path) in answer["error"]["message"]
    errors = answer["errors"]
    assert any("weight" in e for e in errors) and any("colour" in e for e in errors), errors
    assert after.get("a", 0) > 10 and after.get("b", 0) > 10  # still 50/50
    assert traffic.failed == []
    error = vendors["config"]["reload_error"]
    assert error["path"] == str(mux.path) and error["errors"] == errors
    assert code == 0
    assert "config reload refused at" in shown and str(mux.path) in shown
    assert all(line in shown for line in errors)
    assert fixed == 200 and vendors_fixed["config"]["reload_error"] is None


async def test_health_is_kept_for_unchanged_vendors_added_ones_start_fresh_removed_ones_drain(
    tmp_path: Path,
) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}, spare=1) as mux:
        mux.emulators["a"].set_faults(Faults.from_json({"down": True}))
        async with aiohttp.ClientSession() as http:

            async def a_ejected() -> bool:
                async with http.post(f"{mux.url}/v1/messages", json=BODY, headers=AUTH) as r:
                    assert r.status == 200
                _, vendors = await mux.admin("GET", "vendors")
                return vendors["vendors"][0]["state"] == "ejected"

            await eventually(a_ejected, timeout=WAIT, what="a ejected")
            mux.write({"a": 50, "b": 20, "c": 30})
            status, answer = await mux.reload()
            assert status == 200, answer
            assert answer["changes"]["added"] == ["c"]
            _, vendors = await mux.admin("GET", "vendors")
            states = {v["name"]: v["state"] for v in vendors["vendors"]}
            assert states == {"a": "ejected", "b": "healthy", "c": "healthy"}

            # b answers slowly; while a message is at b, b is removed: that attempt finishes.
            b = mux.emulators["b"]
            b.set_faults(Faults.from_json({"latency_ms": 1500, "accept": True}))
            taken = len(b.messages)
            mux.write({"a": 50, "b": 100, "c": 0})  # a is ejected: b takes the first picks
            assert (await mux.reload())[0] == 200
            in_flight = asyncio.create_task(
                http.post(f"{mux.url}/v1/messages", json=BODY, headers=AUTH)
            )

            async def at_b() -> bool:  # b took it and has not answered yet
                return len(b.messages) > taken

            await eventually(at_b, timeout=WAIT, what="a request at b")
            mux.write({"a": 50, "c": 30})
            status, answer = await mux.reload()
            assert status == 200 and answer["changes"]["removed"] == ["b"], answer
            async with await in_flight as r:
                finished = await r.json()
            assert r.status == 200 and finished["vendor"] == "b" and finished["state"] == "sent"
            for _ in range(5):
                async with http.post(f"{mux.url}/v1/messages", json=BODY, headers=AUTH) as r:
                    assert (await r.json())["vendor"] == "c"  # a still ejected, b gone
            _, vendors = await mux.admin("GET", "vendors")
    assert [v["name"] for v in vendors["vendors"]] == ["a", "c"]


async def test_overrides_and_mailmux_variables_keep_precedence_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILMUX_VENDORS__B__WEIGHT", "5")
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with aiohttp.ClientSession() as http:
            body = {"kind": "drain", "vendor": "a", "reason": "test"}
            async with http.post(f"{mux.url}/admin/v1/overrides", json=body, headers=headers) as r:
                assert r.status == 201
        mux.write({"a": 90, "b": 30})
        status, answer = await mux.reload()
        _, vendors = await mux.admin("GET", "vendors")
    assert status == 200, answer
    by_name = {v["name"]: v for v in vendors["vendors"]}
    assert by_name["a"]["configured_weight"] == 90 and by_name["a"]["share"] == 0  # drained
    assert by_name["b"]["configured_weight"] == 5  # the variable, not the file's 30


async def test_a_file_the_overrides_would_leave_nothing_to_route_to_is_refused(
    tmp_path: Path,
) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with aiohttp.ClientSession() as http:
            body = {"kind": "drain", "vendor": "a"}
            async with http.post(f"{mux.url}/admin/v1/overrides", json=body, headers=headers) as r:
                assert r.status == 201
        mux.write({"a": 50, "b": 0})
        status, answer = await mux.reload()
        _, vendors = await mux.admin("GET", "vendors")
    assert status == 422
    assert "with the overrides in force" in answer["errors"][0]
    assert [v["configured_weight"] for v in vendors["vendors"]] == [50, 50]


async def test_settings_bound_at_start_are_reported_not_applied(tmp_path: Path) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        port = mux.app.port
        mux.write({"a": 50, "b": 50}, listen="127.0.0.1:1", retry={"concurrency": 70})
        status, answer = await mux.reload()
        assert mux.app.config.listen == "127.0.0.1:0"
        assert mux.app.port == port
    assert status == 200
    assert answer["changes"]["restart_needed"] == ["listen", "retry.concurrency"]
    assert "needs a restart" in answer["summary"]


async def test_an_attempt_timeout_the_running_lease_cannot_cover_is_refused(
    tmp_path: Path,
) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        mux.write(
            {"a": 50, "b": 50}, delivery={"attempt_timeout": 90.0}, retry={"lease_seconds": 120}
        )
        status, answer = await mux.reload()
    assert status == 422
    assert answer["errors"][0].startswith("retry.lease_seconds:")


async def test_a_change_on_disk_is_reloaded_and_published(tmp_path: Path) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}, reload={"watch": True}) as mux:
        async with asyncio.timeout(WAIT):
            await mux.app.reloader.watching.wait()
        with mux.app.notices.subscribe() as notices:
            mux.write({"a": 10, "b": 90}, reload={"watch": True})
            async with asyncio.timeout(WAIT):
                notice = await notices.get()
            assert notices.take() == []  # one reload for one change
        _, vendors = await mux.admin("GET", "vendors")
    assert notice.kind is NoticeKind.RELOAD
    assert notice.detail["trigger"] == "watch" and notice.detail["retuned"] == ["a", "b"]
    assert [v["configured_weight"] for v in vendors["vendors"]] == [10, 90]


async def test_a_refused_reload_is_counted_and_published(tmp_path: Path) -> None:
    async with node(tmp_path, {"a": 50, "b": 50}) as mux:
        with mux.app.notices.subscribe() as notices:
            mux.path.write_text("vendors: [not, a, mapping]\n")
            status, _ = await mux.reload()
            refused = notices.take()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{mux.url}/metrics", headers=AUTH) as answer,
        ):
            metrics = await answer.text()
    assert status == 422
    assert [n.kind for n in refused] == [NoticeKind.RELOAD_FAILED]
    assert str(mux.path) in refused[0].summary
    assert 'mailmux_config_reloads_total{result="invalid"} 1.0' in metrics


async def test_sighup_reloads_a_running_server(tmp_path: Path) -> None:
    sandbox = {"kind": "sandbox"}
    config = fast_config(
        tmp_path / "mailmux.db",
        {"a": {**sandbox, "weight": 50}, "b": {**sandbox, "weight": 50}},
        reload={"watch": False},
    )
    process = MailmuxProcess(config, tmp_path)
    await process.start()
    try:
        assert process.path is not None and process.proc is not None
        config["vendors"]["a"]["weight"] = 0
        process.path.write_text(yaml.safe_dump(config))
        process.proc.send_signal(signal.SIGHUP)

        async def a_at_zero() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{process.url}/admin/v1/vendors") as answer,
            ):
                vendors = (await answer.json())["vendors"]
            return bool(vendors[0]["configured_weight"] == 0)

        await eventually(a_at_zero, timeout=WAIT, what="the reload after SIGHUP")
    finally:
        assert await process.stop() == 0
    assert any("reloaded (signal)" in line for line in process.log)


async def test_the_embedded_default_has_no_file_to_reload(tmp_path: Path) -> None:
    app = App(load_config(None, {"MAILMUX_STORE": f"sqlite:///{tmp_path / 'm.db'}"}))
    result = await app.reloader.reload("api")
    assert not result.ok and "embedded default" in result.errors[0]


async def test_a_webhook_added_by_a_reload_hears_that_reload_and_a_refused_one(
    tmp_path: Path,
) -> None:
    from aiohttp import web

    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        heard.put_nowait(await request.json())
        return web.Response()

    hooks = web.Application()
    hooks.router.add_post("/hook", hook)
    runner = web.AppRunner(hooks)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target = {"url": f"http://127.0.0.1:{port}/hook", "events": ["reload", "reload_failed"]}
    try:
        async with node(tmp_path, {"a": 50, "b": 50}) as mux:
            mux.write({"a": 60, "b": 40}, notify=[target])
            assert (await mux.reload())[0] == 200
            async with asyncio.timeout(WAIT):
                reloaded = await heard.get()
            mux.write({"a": -1, "b": 40}, notify=[target])
            assert (await mux.reload())[0] == 422
            async with asyncio.timeout(WAIT):
                refused = await heard.get()
    finally:
        await runner.cleanup()
    assert reloaded["kind"] == "reload" and reloaded["detail"]["retuned"] == ["a", "b"]
    assert refused["kind"] == "reload_failed" and "vendors.a.weight" in refused["summary"]
