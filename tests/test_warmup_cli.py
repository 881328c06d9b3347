"""`mailmux warmup` and `GET /admin/v1/warmup` against a running mailmux, over real sockets.

The store is seeded with today's counts before mailmux starts, as another
run of the node (or another node) would have left them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_kit import running

from mailmux import cli
from mailmux.app import App
from mailmux.config import Config
from mailmux.spool.sqlite import SqliteStore
from mailmux.warmup import utc_day

ADMIN_KEY = "admin-key-4567"


def config(tmp_path: Path, start: dt.date, **sections: Any) -> Config:
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "store": f"sqlite:///{tmp_path / 'mailmux.db'}",
            "node_id": "test-node",
            "vendors": {
                "new": {
                    "kind": "sandbox",
                    "weight": 10,
                    "warmup": {"start": start.isoformat(), "daily_caps": [50, 100, 200]},
                },
                "old": {"kind": "sandbox", "weight": 90, "warmup": {"min_share": 0.2}},
                "soon": {
                    "kind": "sandbox",
                    "weight": 0,
                    "warmup": {
                        "start": (start + dt.timedelta(days=30)).isoformat(),
                        "start_cap": 10,
                        "growth": 2,
                        "days": 5,
                    },
                },
                "plain": {"kind": "sandbox", "weight": 10},
            },
            **sections,
        }
    )


async def seed(tmp_path: Path, counts: dict[str, int], day: dt.date) -> None:
    store = SqliteStore(str(tmp_path / "mailmux.db"))
    await store.open()
    try:
        await store.add_usage({(vendor, day.isoformat()): n for vendor, n in counts.items()})
    finally:
        await store.close()


async def mailmux(app: App, *args: str) -> int:
    """The CLI on a thread (blocking urllib), so this loop keeps serving mailmux."""
    url = f"http://127.0.0.1:{app.port}"
    return await asyncio.to_thread(cli.main, [*args, "--url", url])


async def get_warmup(app: App, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{app.port}/admin/v1/warmup", headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def test_the_warmup_endpoint_shows_each_schedule_today(tmp_path: Path) -> None:
    today = utc_day(time.time())
    await seed(tmp_path, {"new": 30, "old": 60, "plain": 10}, today)
    async with running(config(tmp_path, start=today - dt.timedelta(days=1))) as app:
        status, body = await get_warmup(app)
    assert status == 200
    assert body["day"] == today.isoformat()
    new, old, soon = body["schedules"]
    assert (new["vendor"], new["day"], new["cap"], new["sent"], new["days_left"]) == (
        "new",
        2,
        100,
        30,
        2,
    )
    assert (old["vendor"], old["cap"], old["min_share"], old["share"]) == ("old", None, 0.2, 0.6)
    assert (soon["day"], soon["cap"], soon["days_left"]) == (-28, 0, 34)  # before start: 0


async def test_mailmux_warmup_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = utc_day(time.time())
    await seed(tmp_path, {"new": 30, "old": 60, "plain": 10}, today)
    async with running(config(tmp_path, start=today - dt.timedelta(days=1))) as app:
        assert app.usage.reserve("new", None)  # an attempt in flight
        assert await mailmux(app, "warmup") == 0
        app.usage.settle("new", sent=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"UTC day {today.isoformat()}"
    header = "VENDOR START DAY CAP TODAY SENT TODAY DAYS LEFT MIN SHARE"
    assert lines[1].split() == header.split()
    start = (today - dt.timedelta(days=1)).isoformat()
    assert lines[2].split() == ["new", start, "2/3", "100", "30", "(+1", "in", "flight)", "2", "-"]
    assert lines[3].split() == ["old", "-", "-", "none", "60", "0", "20%", "(today", "60.0%)"]
    assert lines[4].split()[2:6] == ["in", "29", "days", "0"]


async def test_the_count_sent_while_running_is_in_the_store_after_stop(tmp_path: Path) -> None:
    today = utc_day(time.time())
    await seed(tmp_path, {"new": 30}, today)
    cfg = config(tmp_path, start=today)
    async with running(cfg) as app:
        for _ in range(3):
            assert app.usage.reserve("new", None)
            app.usage.settle("new", sent=True)
    async with running(cfg) as app:
        _, body = await get_warmup(app)
    assert body["schedules"][0]["sent"] == 33


async def test_no_schedules_and_the_admin_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "store": f"sqlite:///{tmp_path / 'mailmux.db'}",
            "admin_keys": [ADMIN_KEY],
            "vendors": {"a": {"kind": "sandbox", "weight": 1}},
        }
    )
    async with running(cfg) as app:
        status, body = await get_warmup(app)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await get_warmup(app, ADMIN_KEY)
        assert (status, body["schedules"]) == (200, [])
        assert await mailmux(app, "warmup", "--admin-key", ADMIN_KEY) == 0
    assert capsys.readouterr().out.strip() == (
        "no warm-up schedules configured (vendors.<name>.warmup)"
    )
