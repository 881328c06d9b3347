"""The operator's levers against a running mailmux: the CLI and the admin API, real sockets.

mailmux runs in-process (sandbox vendors `a` and `b` at 50/50) while a few
senders keep steady traffic on `POST /v1/messages`; the CLI runs on a thread
(it is blocking urllib), exactly as `mailmux drain a` would from a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_kit import running

from mailmux import cli
from mailmux.app import App
from mailmux.config import Config

CLIENT_KEY = "client-key-0123"
ADMIN_KEY = "admin-key-4567"


def config(tmp_path: Path, **sections: Any) -> Config:
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "store": f"sqlite:///{tmp_path / 'mailmux.db'}",
            "node_id": "test-node",
            "api_keys": [CLIENT_KEY],
            "vendors": {
                "a": {"kind": "sandbox", "weight": 50},
                "b": {"kind": "sandbox", "weight": 50},
            },
            **sections,
        }
    )


def url(app: App) -> str:
    return f"http://127.0.0.1:{app.port}"


async def mailmux(app: App, *args: str, admin_key: str | None = ADMIN_KEY) -> int:
    """`mailmux <args> --url ...` on a thread, so this loop keeps serving mailmux."""
    key = ["--admin-key", admin_key] if admin_key else []
    return await asyncio.to_thread(cli.main, [*args, "--url", url(app), *key])


class Traffic:
    """Steady traffic: each sender posts one message after another; (sent at, vendor) kept."""

    def __init__(self, app: App, senders: int = 4) -> None:
        self.app = app
        self.routed: list[tuple[float, str]] = []
        self._tasks = [asyncio.create_task(self._send()) for _ in range(senders)]

    async def _send(self) -> None:
        body = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        async with aiohttp.ClientSession() as http:
            while True:
                at = time.monotonic()
                async with http.post(
                    f"{url(self.app)}/v1/messages", json=body, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()
                    self.routed.append((at, (await r.json())["vendor"]))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def last_to(self, vendor: str) -> float:
        return max(at for at, v in self.routed if v == vendor)

    def count(self, vendor: str, since: float) -> int:
        return sum(1 for at, v in self.routed if v == vendor and at >= since)


async def admin(app: App, method: str, path: str, key: str | None = ADMIN_KEY) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{url(app)}/admin/v1/{path}", headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def moved_off_a(
    app: App, traffic: Traffic, *command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run `command`; the last message sent that went to `a` must leave within a second.

    Negative: no message sent after the command returned went to `a`.
    """
    started = time.monotonic()
    assert await mailmux(app, *command) == 0
    returned = time.monotonic()
    await asyncio.sleep(1.5)
    assert traffic.count("b", returned) > 20  # traffic kept flowing, all of it to b
    lag = traffic.last_to("a") - returned
    assert capsys.readouterr().out.startswith("split: a 0%")
    with capsys.disabled():
        print(
            f"\nmailmux {' '.join(command)}: took {(returned - started) * 1000:.0f} ms; last "
            f"message to a sent {lag * 1000:+.0f} ms from its return"
        )
    assert lag < 1.0


async def test_drain_and_weights_move_traffic_within_a_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app:
        traffic = Traffic(app)
        try:
            await asyncio.sleep(0.5)
            assert traffic.count("a", 0) > 0 and traffic.count("b", 0) > 0
            await moved_off_a(app, traffic, "drain", "a", "--reason", "a is slow", capsys=capsys)

            assert await mailmux(app, "restore", "a") == 0
            assert capsys.readouterr().out.strip() == "split: a 50%, b 50%"
            back = time.monotonic()
            await asyncio.sleep(0.5)
            assert traffic.count("a", back) > 0

            await moved_off_a(app, traffic, "weights", "a=0", "b=100", capsys=capsys)
        finally:
            await traffic.stop()


async def test_the_cli_prints_the_split_after_each_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path)) as app:  # loopback, no admin keys: no key needed
        assert await mailmux(app, "drain", "a", "--for", "15m", admin_key=None) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith("split: a 0% (drained, until ") and line.endswith("), b 100%")
        assert await mailmux(app, "pin", "a", admin_key=None) == 1  # a drained a pinned: nothing
        assert "override_refused" in capsys.readouterr().err
        assert await mailmux(app, "restore", "a", admin_key=None) == 0
        assert await mailmux(app, "weights", "a=0", "b=0", admin_key=None) == 1
        assert "no vendor would be left with a weight above 0" in capsys.readouterr().err
        assert await mailmux(app, "pin", "a", admin_key=None) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "split: a 100% (pinned), b 0%"
        assert await mailmux(app, "vendors", admin_key=None) == 0
        table = capsys.readouterr().out.splitlines()
        header = "VENDOR KIND CONFIGURED EFFECTIVE SHARE OVERRIDE STATE LAST ERROR"
        assert table[0].split() == header.split()
        assert table[1].split()[:6] == ["a", "sandbox", "50", "50", "100%", "pinned"]
        assert table[2].split()[:5] == ["b", "sandbox", "50", "0", "0%"]


async def test_an_override_for_a_while_expires_on_its_own(tmp_path: Path) -> None:
    async with running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app:
        assert await mailmux(app, "weights", "a=0", "b=100", "--for", "1s") == 0
        assert [r.weight for r in app.deliverer.routes] == [0.0, 100.0]
        deadline = time.monotonic() + 5
        while [r.weight for r in app.deliverer.routes] != [50.0, 50.0]:
            assert time.monotonic() < deadline, "the override did not expire"
            await asyncio.sleep(0.05)
        status, body = await admin(app, "GET", "overrides")
        assert (status, body) == (200, {"overrides": []})
        _, audit = await admin(app, "GET", "audit")
        last = audit["events"][-1]
        assert (last["who"], last["action"]) == ("mailmux", "expire")
        assert {o["vendor"] for o in last["previous"]} == {"a", "b"}


async def test_the_audit_lists_each_change_with_who_why_and_previous(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path, admin_keys=["first-admin", ADMIN_KEY])) as app:
        assert await mailmux(app, "weights", "a=10", "--reason", "warm-up") == 0
        assert await mailmux(app, "weights", "a=20", "--reason", "more") == 0
        assert await mailmux(app, "drain", "b", "--hard", "--reason", "b bounces") == 0
        assert await mailmux(app, "restore", "b", "--reason", "fixed") == 0
        _, body = await admin(app, "GET", "audit")
        events = body["events"]
        assert [(e["who"], e["action"], e["reason"]) for e in events] == [
            ("admin_keys[1]", "weights", "warm-up"),
            ("admin_keys[1]", "weights", "more"),
            ("admin_keys[1]", "drain", "b bounces"),
            ("admin_keys[1]", "restore", "fixed"),
        ]
        assert events[0]["previous"] == []
        assert [o["weight"] for o in events[1]["previous"]] == [10.0]
        assert events[2]["what"][0]["hard"] is True
        assert [o["kind"] for o in events[3]["previous"]] == ["drain"]
        capsys.readouterr()
        assert await mailmux(app, "audit") == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["AT", "WHO", "ACTION", "WHAT", "PREVIOUS", "REASON"]
        assert "a weight 20" in lines[2] and "a weight 10" in lines[2] and "more" in lines[2]
        assert "b hard-drained" in lines[4] and "fixed" in lines[4]


async def test_overrides_survive_a_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path, admin_keys=[ADMIN_KEY])
    async with running(cfg) as app:
        assert await mailmux(app, "pin", "b", "--reason", "a is down") == 0
        assert await mailmux(app, "weights", "a=5", "--for", "1h") == 0
    async with running(cfg) as app:
        assert [(r.vendor, r.weight) for r in app.deliverer.routes] == [("a", 0.0), ("b", 50.0)]
        status, body = await admin(app, "GET", "vendors")
        assert status == 200
        a, b = body["vendors"]
        assert (a["configured_weight"], a["weight"], a["share"]) == (50.0, 0.0, 0.0)
        assert [o["kind"] for o in a["overrides"]] == ["weights"]
        assert a["overrides"][0]["expires_at"] > time.time() + 3000
        assert b["overrides"][0]["reason"] == "a is down"
        assert (b["share"], b["state"], b["last_error"]) == (1.0, "healthy", None)


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("wrong-key", 401, "unauthorized"),
        (CLIENT_KEY, 403, "forbidden"),
        (ADMIN_KEY, 200, None),
    ],
)
async def test_the_admin_api_takes_admin_keys_only(
    tmp_path: Path, key: str | None, status: int, code: str | None
) -> None:
    async with running(config(tmp_path, admin_keys=[ADMIN_KEY])) as app:
        for path in ("status", "vendors", "overrides", "audit"):
            got, body = await admin(app, "GET", path, key)
            assert got == status, body
            if code is not None:
                assert body["error"]["code"] == code
        got, _ = await admin(app, "DELETE", "overrides/a", key)
        assert got == status


async def test_without_admin_keys_the_admin_api_answers_on_loopback_only(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as app:
        status, body = await admin(app, "GET", "status", None)
        assert status == 200 and body["status"] == "ok"
    async with running(config(tmp_path, listen="0.0.0.0:0")) as app:
        status, body = await admin(app, "GET", "vendors", None)
        assert status == 403
        assert "needs admin_keys" in body["error"]["message"]


async def test_a_bad_override_is_a_json_error(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as app, aiohttp.ClientSession() as http:
        for body, message in [
            ({"kind": "tilt"}, "kind must be one of"),
            ({"kind": "drain"}, "drain needs"),
            ({"kind": "drain", "vendor": "z"}, "unknown vendor 'z'"),
            ({"kind": "pin", "vendor": "a", "hard": True}, "hard applies to drain only"),
            ({"kind": "weights", "weights": {"a": "x"}}, "weights.a: must be a number"),
            ({"kind": "weights", "weights": {"a": 1}, "for": "soon"}, "not a duration"),
        ]:
            async with http.post(f"{url(app)}/admin/v1/overrides", json=body) as answer:
                assert answer.status == 422
                assert message in (await answer.json())["error"]["message"]
