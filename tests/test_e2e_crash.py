"""kill -9 while the spool drains: an attempt left in doubt follows the ambiguous policy.

The ESP emulator takes each retried message and then never answers (`hang` +
`accept`), so a kill while the drain runs leaves every attempt in flight with
the message already at the ESP — the window in which a crash used to send
mail twice. Each test repeats the kill 20 times on one spool.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from harness import MailmuxProcess, eventually, fast_config, message, send

from mailmux.emulator import Emulator, Faults

ROUNDS = 20
PER_ROUND = 10


async def message_view(http: aiohttp.ClientSession, url: str, message_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/v1/messages/{message_id}") as response:
        assert response.status == 200
        view: dict[str, Any] = await response.json()
        return view


def arrived(esp: Emulator) -> Counter[str]:
    """How many times each subject reached the ESP."""
    return Counter(stored.body["subject"] for stored in esp.messages)  # type: ignore[index]


async def drain_with_kills(
    policy: str,
    esp: Emulator,
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
    workdir: Path,
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Spool, start the drain, kill -9 mid-attempt, restart; ROUNDS times. Returns each
    message's subject by id and its final view."""
    config = fast_config(
        workdir / "m.db",
        {
            "esp": {
                "kind": "sendgrid",
                "api_key": "SG.test",
                "base_url": f"http://127.0.0.1:{esp.port}",
                "weight": 1,
            }
        },
        # Far longer than a round takes: no attempt times out, each ends by the kill.
        delivery={"attempt_timeout": 20.0, "ambiguous": {"default": policy}},
        retry={"lease_seconds": 30.0},
    )
    process = MailmuxProcess(config, workdir)
    started.append(process)
    await process.start()
    subjects: dict[str, str] = {}
    for n in range(ROUNDS):
        esp.set_faults(Faults(status=503))  # nothing is taken: every message is spooled
        batch = [message(n * PER_ROUND + i) for i in range(PER_ROUND)]
        replies = await asyncio.gather(*(send(http, process.url, body) for body in batch))
        assert [status for status, _ in replies] == [202] * PER_ROUND
        ids = [reply["id"] for _, reply in replies]
        subjects.update(zip(ids, (body["subject"] for body in batch), strict=True))
        before = len(esp.messages)
        esp.set_faults(Faults(hang=True, accept=True))  # taken, but no answer comes back

        async def taken(before: int = before) -> bool:
            return len(esp.messages) > before

        await eventually(taken, what=f"round {n}: the drain's attempts reach the ESP")
        await process.kill()
        esp.set_faults(Faults())
        process = MailmuxProcess(config, workdir)
        started.append(process)
        await process.start()

        async def round_settled(url: str = process.url, ids: tuple[str, ...] = tuple(ids)) -> bool:
            views = [await message_view(http, url, i) for i in ids]
            return all(view["state"] != "queued" for view in views)

        await eventually(round_settled, what=f"round {n}: every message settled")
    views = {i: await message_view(http, process.url, i) for i in subjects}
    return subjects, views


def in_doubt(view: dict[str, Any]) -> bool:
    return any(
        attempt.get("in_doubt") and attempt["outcome"] == "ambiguous"
        for attempt in view["attempts"]
    )


async def test_kill_9_during_the_drain_20_times(
    tmp_path: Path, http: aiohttp.ClientSession, started: list[MailmuxProcess]
) -> None:
    """Both policies side by side, each on its own ESP and spool."""
    esps = {"assume_sent": Emulator("sendgrid"), "resend": Emulator("sendgrid")}
    for esp in esps.values():
        await esp.start()
    try:
        (tmp_path / "assume_sent").mkdir()
        (tmp_path / "resend").mkdir()
        runs = await asyncio.gather(
            *(
                drain_with_kills(policy, esp, http, started, tmp_path / policy)
                for policy, esp in esps.items()
            )
        )
    finally:
        for esp in esps.values():
            await esp.stop()
    (assumed, assumed_views), (resent, resent_views) = runs

    # assume_sent: never twice; a message missing at the ESP is one whose attempt was in doubt.
    counts = arrived(esps["assume_sent"])
    assert {s: c for s, c in counts.items() if c > 1} == {}
    assert {view["state"] for view in assumed_views.values()} == {"sent"}
    doubted = [i for i, view in assumed_views.items() if in_doubt(view)]
    assert len(doubted) >= ROUNDS  # every kill landed mid-attempt
    assert [i for i, s in assumed.items() if counts[s] == 0 and i not in doubted] == []

    # resend: nothing lost; every duplicate is a message whose events show the doubt.
    counts = arrived(esps["resend"])
    assert {view["state"] for view in resent_views.values()} == {"sent"}
    assert all(counts[subject] >= 1 for subject in resent.values())
    duplicated = [i for i, subject in resent.items() if counts[subject] > 1]
    assert len(duplicated) >= ROUNDS  # every kill landed mid-attempt
    assert [i for i in duplicated if not in_doubt(resent_views[i])] == []
