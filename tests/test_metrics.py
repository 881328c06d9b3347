"""`/metrics` of a running mailmux in front of emulators, read with prometheus-client's parser."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from shaped_kit import CLIENT_KEY, CLIENT_NAME, Router, router
from smtp_kit import Mailmux, in_thread, mailmux

from mailmux.message import DEFAULT_TRAFFIC_CLASS

CLASS = {"class": DEFAULT_TRAFFIC_CLASS}  # a Python keyword: passed as **CLASS
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
NATIVE = {
    "from": "app@shop.example",
    "to": ["user@example.net"],
    "subject": "Your code",
    "text": "123456",
}
MIME = (
    b"From: Shop <shop@example.com>\r\nTo: ana@example.org\r\nSubject: Your code\r\n\r\n123456\r\n"
)
SENDGRID = {
    "personalizations": [{"to": [{"email": "user@example.net"}]}],
    "from": {"email": "app@shop.example"},
    "subject": "Your code",
    "content": [{"type": "text/plain", "value": "123456"}],
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(mux: Router | Mailmux) -> Samples:
    """Every sample of `/metrics`, by name and labels."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{mux.app.port}/metrics", headers=AUTH) as answer,
    ):
        assert answer.status == 200, await answer.text()
        assert answer.content_type == "text/plain"
        text = await answer.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def post(mux: Router, path: str, body: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{mux.url}{path}", json=body, headers=AUTH) as answer,
    ):
        return answer.status


async def test_counters_move_as_traffic_flows(tmp_path: Path) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux:
        before = await scrape(mux)
        for _ in range(3):
            assert await post(mux, "/v1/messages", NATIVE) == 200
        assert await post(mux, "/v3/mail/send", SENDGRID) == 202
        assert await post(mux, "/v1/messages", {"from": "nope"}) == 400
        after = await scrape(mux)

    assert value(before, "mailmux_ingress_requests_total", shape="native", status="200") == 0
    assert value(after, "mailmux_ingress_requests_total", shape="native", status="200") == 3
    assert value(after, "mailmux_ingress_requests_total", shape="native", status="400") == 1
    assert value(after, "mailmux_ingress_requests_total", shape="sendgrid", status="202") == 1
    accepted = sum(
        value(after, "mailmux_attempts_total", vendor=v, outcome="accepted") for v in "ab"
    )
    assert accepted == 4
    assert value(after, "mailmux_messages_total", state="sent", **CLASS) == 4
    observed = sum(value(after, "mailmux_attempt_duration_seconds_count", vendor=v) for v in "ab")
    assert observed == 4
    for v in "ab":
        assert value(after, "mailmux_vendor_state", vendor=v, state="healthy") == 1
        assert value(after, "mailmux_vendor_effective_weight", vendor=v) == 1
    assert value(after, "mailmux_spool_depth") == 0
    assert value(after, "mailmux_config_reloads_total", result="ok") == 0


async def test_smtp_submissions_are_counted_by_reply_code(tmp_path: Path) -> None:
    def send(mm: Mailmux) -> int:
        with mm.client() as client:
            client.login(CLIENT_NAME, CLIENT_KEY)
            code, _ = client.mail("shop@example.com")
            assert code == 250
            code, _ = client.rcpt("ana@example.org")
            assert code == 250
            return int(client.data(MIME)[0])

    async with mailmux(tmp_path, {"esp": "sendgrid"}) as mm:
        assert await in_thread(send, mm) == 250
        samples = await scrape(mm)

    assert value(samples, "mailmux_ingress_requests_total", shape="smtp", status="250") == 1


async def test_state_gauge_flips_when_a_vendor_goes_down(tmp_path: Path) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux:
        await mux.faults("a", {"down": True})
        for _ in range(40):  # weighted 50/50: a is tried first about half the time
            assert await post(mux, "/v1/messages", NATIVE) == 200
            samples = await scrape(mux)
            if value(samples, "mailmux_vendor_state", vendor="a", state="ejected") == 1:
                break
        else:
            raise AssertionError("vendor a was never ejected")

    assert value(samples, "mailmux_vendor_state", vendor="a", state="healthy") == 0
    assert value(samples, "mailmux_vendor_state", vendor="b", state="healthy") == 1
    reason = {"vendor": "a", "reason": "consecutive_failures"}
    assert value(samples, "mailmux_ejections_total", **reason) == 1
    assert value(samples, "mailmux_attempts_total", vendor="a", outcome="retriable") >= 5


async def test_spool_depth_rises_when_every_vendor_is_down_and_drains(tmp_path: Path) -> None:
    async with router(tmp_path, {"a": "sendgrid", "b": "mailgun"}) as mux:
        for name in ("a", "b"):
            await mux.faults(name, {"down": True})
        for _ in range(3):
            assert await post(mux, "/v1/messages", NATIVE) == 202
        spooled = await scrape(mux)
        for name in ("a", "b"):
            await mux.faults(name, {})
        for _ in range(100):  # the retrier polls every 50 ms
            drained = await scrape(mux)
            if value(drained, "mailmux_spool_depth") == 0:
                break
            await asyncio.sleep(0.1)

    assert value(spooled, "mailmux_spool_depth") == 3  # failed retries keep them queued
    assert value(spooled, "mailmux_spool_oldest_age_seconds") > 0
    assert value(spooled, "mailmux_messages_total", state="queued", **CLASS) == 3
    assert value(drained, "mailmux_spool_depth") == 0
    assert value(drained, "mailmux_spool_oldest_age_seconds") == 0
    assert value(drained, "mailmux_messages_total", state="sent", **CLASS) == 3  # by retries
    assert value(drained, "mailmux_messages_total", state="queued", **CLASS) == 3


async def test_metrics_ask_for_a_client_key(tmp_path: Path) -> None:
    async with (
        router(tmp_path, {"a": "sendgrid"}) as mux,
        aiohttp.ClientSession() as http,
        http.get(f"{mux.url}/metrics") as answer,
    ):
        assert answer.status == 401


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with router(tmp_path, {"a": "sendgrid"}, metrics={"enabled": False}) as mux:
        assert await post(mux, "/v1/messages", NATIVE) == 200
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{mux.url}/metrics", headers=AUTH) as answer,
        ):
            assert answer.status == 404
