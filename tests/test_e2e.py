"""End to end over real sockets: mailmux as a process, SendGrid-shaped emulators."""

from __future__ import annotations

import asyncio
import math
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import (
    MailmuxProcess,
    accepts_connections,
    eventually,
    fast_config,
    free_port,
    message,
    send,
    send_many,
)

from mailmux.emulator import Emulator, Faults


def subjects(*emulators: Emulator) -> Counter[str]:
    """How many times each subject reached any of the emulators."""
    counts: Counter[str] = Counter()
    for emulator in emulators:
        for stored in emulator.messages:
            body: Any = stored.body
            counts[body["subject"]] += 1
    return counts


def sendgrid(emulator: Emulator, weight: float, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "sendgrid",
        "api_key": "SG.test",
        "base_url": f"http://127.0.0.1:{emulator.port}",
        "weight": weight,
        **extra,
    }


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[Emulator, Emulator]]:
    alpha, bravo = Emulator("sendgrid"), Emulator("sendgrid")
    await alpha.start()
    await bravo.start()
    yield alpha, bravo
    await alpha.stop()
    await bravo.stop()


async def start(
    started: list[MailmuxProcess], config: dict[str, Any] | None, workdir: Path, **kw: Any
) -> MailmuxProcess:
    process = MailmuxProcess(config, workdir, **kw)
    started.append(process)
    await process.start()
    return process


async def health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/v1/health") as response:
        assert response.status == 200
        report: dict[str, Any] = await response.json()
        return report


def vendor_state(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in report["vendors"] if v["name"] == name)


async def test_split_follows_weights_over_2000_messages(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 70), "bravo": sendgrid(bravo, 30)}
    )
    mailmux = await start(started, config, tmp_path)
    results = await send_many(http, mailmux.url, 2000)
    assert [status for status, _ in results] == [200] * 2000
    assert {reply["state"] for _, reply in results} == {"sent"}
    n, p = 2000, 0.7
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(len(alpha.messages) - n * p) < 5 * sigma, (len(alpha.messages), len(bravo.messages))
    assert len(alpha.messages) + len(bravo.messages) == n
    # The receipt names the vendor that really has the message.
    by_vendor = Counter(reply["vendor"] for _, reply in results)
    assert by_vendor == {"alpha": len(alpha.messages), "bravo": len(bravo.messages)}


async def test_vendor_down_mid_run_fails_no_request(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 70), "bravo": sendgrid(bravo, 30)}
    )
    mailmux = await start(started, config, tmp_path)
    first = await send_many(http, mailmux.url, 300)
    alpha_before = alpha.accepted_total
    assert alpha_before > 0

    async def take_alpha_down_midway() -> None:
        await eventually(lambda: _at_least(bravo, alpha, 400), what="traffic after warm-up")
        alpha.set_down(True)

    second, _ = await asyncio.gather(
        send_many(http, mailmux.url, 700, start=300), take_alpha_down_midway()
    )
    results = first + second
    assert [status for status, _ in results] == [200] * 1000, "a client request failed"
    delivered = subjects(alpha, bravo)
    assert set(delivered) == {f"message {n}" for n in range(1000)}
    # Going down dropped the requests alpha was answering: those attempts are ambiguous
    # (alpha may have taken the message) and the default policy resends them elsewhere.
    # A message may be delivered twice only that way.
    for n, (_, reply) in enumerate(results):
        if delivered[f"message {n}"] > 1:
            async with http.get(f"{mailmux.url}/v1/messages/{reply['id']}") as response:
                attempts = (await response.json())["attempts"]
            assert [a["outcome"] for a in attempts] == ["ambiguous", "accepted"], attempts
    report = await health(http, mailmux.url)
    assert vendor_state(report, "alpha")["state"] == "ejected"
    # Once alpha was ejected, everything went to bravo.
    tail = await send_many(http, mailmux.url, 100, start=1000)
    assert {reply["vendor"] for _, reply in tail} == {"bravo"}


async def _at_least(a: Emulator, b: Emulator, total: int) -> bool:
    return a.accepted_total + b.accepted_total >= total


async def test_slow_vendor_is_ejected(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    alpha.set_faults(Faults(latency_ms=400))
    config = fast_config(
        tmp_path / "m.db",
        {"alpha": sendgrid(alpha, 50), "bravo": sendgrid(bravo, 50)},
        health={"latency_p90_seconds": 0.2, "min_requests": 10, "consecutive_failures": 100},
    )
    mailmux = await start(started, config, tmp_path)
    await send_many(http, mailmux.url, 60, concurrency=8)
    report = await health(http, mailmux.url)
    alpha_state = vendor_state(report, "alpha")
    assert alpha_state["state"] == "ejected", str(alpha_state)
    assert "latency" in alpha_state["last_reason"]
    assert vendor_state(report, "bravo")["state"] == "healthy"
    tail = await send_many(http, mailmux.url, 40, start=60)
    assert {reply["vendor"] for _, reply in tail} == {"bravo"}


async def _all_sent(http: aiohttp.ClientSession, url: str, ids: list[str]) -> bool:
    for message_id in ids:
        async with http.get(f"{url}/v1/messages/{message_id}") as response:
            if (await response.json())["state"] != "sent":
                return False
    return True


async def _up(*emulators: Emulator) -> None:
    for emulator in emulators:
        emulator.set_down(False)
        port = emulator.port

        async def listening(port: int = port) -> bool:
            return await accepts_connections(port)

        await eventually(listening, what=f"emulator on {port}")


async def test_both_down_spools_then_delivers_each_exactly_once(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 50), "bravo": sendgrid(bravo, 50)}
    )
    mailmux = await start(started, config, tmp_path)
    alpha.set_down(True)
    bravo.set_down(True)
    results = await send_many(http, mailmux.url, 50)
    assert [status for status, _ in results] == [202] * 50
    assert {reply["state"] for _, reply in results} == {"queued"}
    ids = [reply["id"] for _, reply in results]
    async with http.get(f"{mailmux.url}/v1/messages/{ids[0]}") as response:
        queued = await response.json()
    assert queued["state"] == "queued"
    assert [e["kind"] for e in queued["events"]][:1] == ["received"]
    assert "spooled" in [e["kind"] for e in queued["events"]]
    await _up(alpha, bravo)
    await eventually(lambda: _all_sent(http, mailmux.url, ids), what="spool drained")
    assert subjects(alpha, bravo) == {f"message {n}": 1 for n in range(50)}


async def test_kill_9_with_spooled_mail_loses_nothing(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 50), "bravo": sendgrid(bravo, 50)}
    )
    first = await start(started, config, tmp_path)
    alpha.set_down(True)
    bravo.set_down(True)
    results = await send_many(http, first.url, 40)
    assert [status for status, _ in results] == [202] * 40
    await first.kill()
    await _up(alpha, bravo)
    second = await start(started, config, tmp_path)
    ids = [reply["id"] for _, reply in results]
    await eventually(lambda: _all_sent(http, second.url, ids), what="spool drained after restart")
    assert subjects(alpha, bravo) == {f"message {n}": 1 for n in range(40)}


async def test_same_idempotency_key_sends_once(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 50), "bravo": sendgrid(bravo, 50)}
    )
    mailmux = await start(started, config, tmp_path)
    key = {"Idempotency-Key": "order-42-receipt"}
    status1, first = await send(http, mailmux.url, message(1), **key)
    status2, second = await send(http, mailmux.url, message(1), **key)
    assert (status1, status2) == (200, 200)
    assert second == first
    concurrent = await asyncio.gather(
        *(send(http, mailmux.url, message(2), **{"Idempotency-Key": "k2"}) for _ in range(10))
    )
    assert len({reply["id"] for _, reply in concurrent}) == 1
    assert subjects(alpha, bravo) == {"message 1": 1, "message 2": 1}
    async with http.post(f"{mailmux.url}/v1/messages", json=message(1), headers=key) as response:
        assert response.headers.get("Idempotent-Replayed") == "true"


async def test_message_error_fails_without_failover_or_health_hit(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    alpha.set_faults(Faults(status=400))
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 1), "bravo": sendgrid(bravo, 0)}
    )
    mailmux = await start(started, config, tmp_path)
    results = await send_many(http, mailmux.url, 10)
    assert [status for status, _ in results] == [422] * 10
    assert {reply["state"] for _, reply in results} == {"failed"}
    assert {reply["error"]["code"] for _, reply in results} == {"rejected"}
    assert bravo.messages == []
    report = await health(http, mailmux.url)
    assert vendor_state(report, "alpha")["state"] == "healthy"


async def test_vendor_config_error_ejects_and_fails_over(
    tmp_path: Path,
    emulators: tuple[Emulator, Emulator],
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    alpha, bravo = emulators
    alpha.set_faults(Faults(status=401))
    config = fast_config(
        tmp_path / "m.db", {"alpha": sendgrid(alpha, 1), "bravo": sendgrid(bravo, 0)}
    )
    mailmux = await start(started, config, tmp_path)
    results = await send_many(http, mailmux.url, 5, concurrency=1)
    assert {(status, reply["vendor"]) for status, reply in results} == {(200, "bravo")}
    alpha_state = vendor_state(await health(http, mailmux.url), "alpha")
    assert alpha_state["state"] == "ejected"
    assert "vendor_config" in alpha_state["last_reason"]
    assert alpha_state["last_error"].startswith("vendor_config: API key rejected")
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailmux",
        "status",
        "--url",
        mailmux.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(status.communicate(), 30)
    assert status.returncode == 0
    assert "ejected (vendor_config)" in out.decode()
    assert err.decode().startswith(
        "vendor alpha cannot send until its configuration is fixed: vendor_config: API key"
    )


async def test_embedded_default_sends_through_sandboxes(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    started: list[MailmuxProcess],
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    mailmux = await start(started, None, tmp_path, env={"MAILMUX_LISTEN": listen}, listen=listen)
    results = await send_many(http, mailmux.url, 20)
    assert {reply["vendor"] for _, reply in results} <= {"sandbox_a", "sandbox_b"}
    assert [status for status, _ in results] == [200] * 20
    seen = 0
    for name in ("sandbox_a", "sandbox_b"):
        async with http.get(f"{mailmux.url}/v1/sandbox/{name}/messages") as response:
            seen += len(await response.json())
    assert seen == 20
    assert (tmp_path / "mailmux.db").exists()


async def test_failover_across_esps_translates_the_message(
    tmp_path: Path, http: aiohttp.ClientSession, started: list[MailmuxProcess]
) -> None:
    """SendGrid down: the same message goes out through Mailgun, in Mailgun's own format."""
    sendgrid_emulator, mailgun_emulator = Emulator("sendgrid"), Emulator("mailgun")
    await sendgrid_emulator.start()
    await mailgun_emulator.start()
    try:
        sendgrid_emulator.set_down(True)
        vendors = {
            "primary": sendgrid(sendgrid_emulator, 1),
            "backup": {
                "kind": "mailgun",
                "api_key": "key-test",
                "domain": "mg.example.com",
                "base_url": f"http://127.0.0.1:{mailgun_emulator.port}",
                "weight": 0,
            },
        }
        mailmux = await start(started, fast_config(tmp_path / "m.db", vendors), tmp_path)
        body = message(
            7,
            cc=["Carol <carol@example.org>"],
            reply_to="help@example.com",
            html="<p>body 7</p>",
            headers={"X-Order": "42"},
            tags=["receipt"],
            metadata={"order": "42"},
        )
        status, reply = await send(http, mailmux.url, body)
        assert (status, reply["vendor"]) == (200, "backup")
        [stored] = mailgun_emulator.messages
        form: Any = stored.body
        assert reply["vendor_message_id"] == stored.id
        assert form["from"] == "Sender <sender@example.com>"
        assert form["to"] == ["user7@example.net"]
        assert form["cc"] == ["Carol <carol@example.org>"]
        assert form["subject"] == "message 7"
        assert (form["text"], form["html"]) == ("body 7", "<p>body 7</p>")
        assert form["h:Reply-To"] == "help@example.com"
        assert form["h:X-Order"] == "42"
        assert form["o:tag"] == ["receipt"]
        assert form["v:order"] == "42"
        async with http.get(f"{mailmux.url}/v1/messages/{reply['id']}") as response:
            attempts = (await response.json())["attempts"]
        assert [(a["vendor"], a["outcome"]) for a in attempts] == [
            ("primary", "retriable"),
            ("backup", "accepted"),
        ]
    finally:
        await sendgrid_emulator.stop()
        await mailgun_emulator.stop()
