"""The SendGrid emulator over real sockets: storage, faults, control API, SDK, CLI entry."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import pytest
from emulator_kit import TIMEOUT, emulator_fixture, http_fixture, set_faults, vendor_fixture
from vendor_kit import MESSAGE_ID

from mailmux.emulator import SHAPES, Emulator, FaultError, Faults
from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import AiohttpTransport, Outcome
from mailmux.vendors.sendgrid import SendGridVendor

API_KEY = "SG.emulator-test-key"

emulator = emulator_fixture("sendgrid", seed=20240601)
vendor = vendor_fixture(SendGridVendor, "primary", api_key=API_KEY)
http = http_fixture()


def message(n: int = 0) -> Message:
    return Message(
        sender=Address("noreply@example.com", "Zoë Shop"),
        to=(Address(f"ana{n}@example.org", "Ana María"),),
        cc=(Address("chen@example.com", "陈伟"),),
        reply_to=(Address("help@example.com"),),
        subject=f"Receipt №{n}",
        text="Thanks.",
        html="<p>Thanks.</p>",
        headers={"X-Order": str(n)},
        attachments=(Attachment("a.txt", b"hello", "text/plain"),),
        tags=("receipt",),
        metadata={"order": str(n)},
    )


async def control(
    http: aiohttp.ClientSession, port: int, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    async with http.request(method, f"http://127.0.0.1:{port}{path}", data=data) as response:
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw else None)


# -- the happy path --------------------------------------------------------------


async def test_accepted_message_is_stored_exactly_as_sent(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    sent = message(1)
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 202)
    status, listed = await control(http, emulator.port, "GET", "/_emulator/messages")
    assert status == 200
    (stored,) = listed
    assert stored["id"] == result.vendor_message_id
    assert stored["body"] == orjson.loads(vendor.build_request(sent, MESSAGE_ID).body)
    assert stored["body"]["personalizations"][0]["to"] == [
        {"email": "ana1@example.org", "name": "Ana María"}
    ]
    assert stored["body"]["subject"] == "Receipt №1"
    assert stored["headers"]["authorization"] == "Bearer …-key"
    assert stored["headers"]["content-type"] == "application/json"
    assert abs(datetime.fromisoformat(stored["received_at"]).timestamp() - time.time()) < 60
    (kept,) = emulator.messages
    assert (kept.id, kept.body) == (stored["id"], stored["body"])


async def test_a_bcc_only_message_arrives_as_copies_that_name_only_their_own_recipient(
    emulator: Emulator, vendor: SendGridVendor
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = replace(message(1), to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 202)
    (stored,) = emulator.messages
    personalizations = stored.body["personalizations"]
    assert [p["to"] for p in personalizations] == [
        [{"email": "audit@example.com"}],
        [{"email": "boss@example.com", "name": "Boss"}],
    ]
    assert all(p.keys() == {"to", "custom_args"} for p in personalizations)  # no cc, no bcc
    shared = {k: v for k, v in stored.body.items() if k != "personalizations"}
    assert b"audit@" not in orjson.dumps(shared) and b"boss@" not in orjson.dumps(shared)


async def test_a_personalization_without_to_is_refused_as_sendgrid_does(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    body = orjson.loads(vendor.build_request(message(), MESSAGE_ID).body)
    body["personalizations"] = [{"bcc": [{"email": "audit@example.com"}]}]
    url = f"http://127.0.0.1:{emulator.port}/v3/mail/send"
    async with http.post(url, json=body, headers={"Authorization": "Bearer k"}) as response:
        assert response.status == 400
        (error,) = (await response.json())["errors"]
    assert error["field"] == "personalizations.0.to"
    assert error["message"].startswith("The to array is required for all personalization")
    assert emulator.messages == []


async def test_ids_are_unique_and_delete_clears_the_store(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    results = [await vendor.send(message(n), TIMEOUT, MESSAGE_ID) for n in range(3)]
    ids = [r.vendor_message_id for r in results]
    assert len(set(ids)) == 3
    assert [m.id for m in emulator.messages] == ids

    status, _ = await control(http, emulator.port, "DELETE", "/_emulator/messages")
    assert status == 204
    assert (await control(http, emulator.port, "GET", "/_emulator/messages"))[1] == []
    assert emulator.accepted_total == 3


async def test_the_store_is_bounded_and_keeps_the_newest() -> None:
    server = Emulator("sendgrid", max_messages=2)
    await server.start()
    sendgrid = SendGridVendor(
        "primary", AiohttpTransport(), api_key=API_KEY, base_url=f"http://127.0.0.1:{server.port}"
    )
    try:
        ids = [
            (await sendgrid.send(message(n), TIMEOUT, MESSAGE_ID)).vendor_message_id
            for n in range(4)
        ]
        assert [m.id for m in server.messages] == ids[2:]
        assert server.accepted_total == 4
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/_emulator/messages"
            async with http.get(url) as response:
                assert response.headers["X-Emulator-Accepted-Total"] == "4"
                assert [m["id"] for m in await response.json()] == ids[2:]
    finally:
        await sendgrid.close()
        await server.stop()


# -- SendGrid's own checks -------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Basic dXNlcjpwYXNz"])
async def test_missing_or_wrong_auth_is_401_in_sendgrid_shape(
    emulator: Emulator, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    body = orjson.loads(
        SendGridVendor("x", AiohttpTransport(), api_key="k")
        .build_request(message(), MESSAGE_ID)
        .body
    )
    url = f"http://127.0.0.1:{emulator.port}/v3/mail/send"
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 401
        answer = await response.json()
    (error,) = answer["errors"]
    assert "Authorization" in error["message"]
    assert (error["field"], error["help"]) == (None, None)
    assert emulator.messages == []


async def test_invalid_body_is_400_naming_each_field(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{emulator.port}/v3/mail/send"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = {"personalizations": [{"to": []}], "from": {"name": "no address"}}
    async with http.post(url, json=body, headers=auth) as response:
        assert response.status == 400
        answer = await response.json()
    assert [e["field"] for e in answer["errors"]] == [
        "from.email",
        "personalizations.0.to",
        "content",
        "subject",
    ]
    async with http.post(url, data=b"{not json", headers=auth) as response:
        assert response.status == 400
    async with http.post(url, json={}, headers=auth) as response:
        fields = [e["field"] for e in (await response.json())["errors"]]
        assert "personalizations" in fields
    assert emulator.messages == []


async def test_a_template_stands_in_for_content_and_subject(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "b@example.com"},
        "template_id": "d-123",
    }
    url = f"http://127.0.0.1:{emulator.port}/v3/mail/send"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 202
        assert response.headers["X-Message-Id"] == emulator.messages[0].id
        assert await response.read() == b""


# -- faults ------------------------------------------------------------------------


async def test_status_503_is_retriable_and_nothing_is_stored(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 503})
    assert await control(http, emulator.port, "GET", "/_emulator/faults") == (200, {"status": 503})

    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert "emulated fault" in result.reason
    assert emulator.messages == []


async def test_429_with_retry_after_is_rate_limited(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 429, "retry_after": 7})
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


async def test_rate_half_hits_about_half_of_200_requests(
    emulator: Emulator, vendor: SendGridVendor
) -> None:
    emulator.set_faults(Faults(status=503, rate=0.5))
    outcomes = [(await vendor.send(message(n), TIMEOUT, MESSAGE_ID)).outcome for n in range(200)]

    failed = outcomes.count(Outcome.RETRIABLE)
    assert 70 <= failed <= 130
    assert outcomes.count(Outcome.ACCEPTED) == 200 - failed == len(emulator.messages)


async def test_latency_delays_the_answer(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"latency_ms": 150})
    started = time.monotonic()
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert time.monotonic() - started >= 0.150
    assert result.outcome is Outcome.ACCEPTED


async def test_latency_combines_with_a_status(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"latency_ms": 100, "status": 500})
    started = time.monotonic()
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert time.monotonic() - started >= 0.100
    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 500)


async def test_hang_past_the_attempt_timeout_is_ambiguous(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"hang": True})
    result = await vendor.send(message(), 0.3, MESSAGE_ID)
    assert result.outcome is Outcome.AMBIGUOUS
    assert "0.3" in result.reason


async def test_a_hung_request_is_answered_once_the_faults_expire(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()  # before the faults: their 100 ms run from the POST
    await set_faults(http, emulator.port, {"hang": True, "for_ms": 100})
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert time.monotonic() - started >= 0.100
    assert result.outcome is Outcome.ACCEPTED
    assert emulator.faults == Faults()


@pytest.mark.parametrize(
    ("faults", "outcome"),
    [
        ({"hang": True, "accept": True}, Outcome.AMBIGUOUS),
        ({"reset": True, "accept": True}, Outcome.AMBIGUOUS),
        ({"status": 503, "accept": True}, Outcome.RETRIABLE),
    ],
)
async def test_accept_keeps_the_message_though_the_answer_goes_wrong(
    emulator: Emulator,
    vendor: SendGridVendor,
    http: aiohttp.ClientSession,
    faults: dict[str, Any],
    outcome: Outcome,
) -> None:
    await set_faults(http, emulator.port, faults)
    # A hang needs a short attempt timeout to end; an answer needs room to arrive
    # on a busy machine.
    timeout = 0.3 if faults.get("hang") else TIMEOUT
    result = await vendor.send(message(), timeout, MESSAGE_ID)
    assert result.outcome is outcome
    assert len(emulator.messages) == 1


async def test_without_accept_a_faulted_request_is_not_kept(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"reset": True})
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.AMBIGUOUS
    assert emulator.messages == []


def test_accept_alone_is_refused() -> None:
    with pytest.raises(FaultError, match="accept"):
        Faults(accept=True)


async def test_reset_is_ambiguous(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"reset": True})
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.AMBIGUOUS
    assert emulator.messages == []


async def test_down_refuses_connections_then_listens_again_on_the_same_port(
    http: aiohttp.ClientSession,
) -> None:
    server = Emulator("sendgrid", control_port=0)
    await server.start()
    assert server.control_port is not None
    sendgrid = SendGridVendor(
        "primary", AiohttpTransport(), api_key=API_KEY, base_url=f"http://127.0.0.1:{server.port}"
    )
    port = server.port
    try:
        assert (
            await sendgrid.send(message(), TIMEOUT, MESSAGE_ID)
        ).outcome is Outcome.ACCEPTED  # pooled

        await set_faults(http, server.control_port, {"down": True})
        refused = await sendgrid.send(message(), TIMEOUT, MESSAGE_ID)
        assert refused.outcome is Outcome.RETRIABLE
        assert refused.reason.startswith("connect failed")
        listed = await control(http, server.control_port, "GET", "/_emulator/messages")
        assert (listed[0], len(listed[1])) == (200, 1)

        await set_faults(http, server.control_port, {})
        assert server.port == port
        assert (await sendgrid.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED
        assert len(server.messages) == 2
    finally:
        await sendgrid.close()
        await server.stop()


async def test_set_down_from_python_and_back(emulator: Emulator, vendor: SendGridVendor) -> None:
    emulator.set_down(True)
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.RETRIABLE
    emulator.set_down(False)  # listening again when this returns: no wait needed
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED


async def test_down_for_a_while_comes_back_by_itself(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"down": True, "for_ms": 100})
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.RETRIABLE

    assert await asyncio.wait_for(emulator.faults_changed(), TIMEOUT) == Faults()
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED


async def test_empty_faults_clear_everything(
    emulator: Emulator, vendor: SendGridVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 500, "rate": 0.9, "latency_ms": 50})
    faults = await control(http, emulator.port, "GET", "/_emulator/faults")
    assert faults == (200, {"status": 500, "rate": 0.9, "latency_ms": 50.0})

    await set_faults(http, emulator.port, {})

    assert await control(http, emulator.port, "GET", "/_emulator/faults") == (200, {})
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED


async def test_control_routes_ignore_faults(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"hang": True})
    # These would hang forever (and time out the test) if faults reached them.
    assert (await control(http, emulator.port, "GET", "/_emulator/messages")) == (200, [])
    assert (await control(http, emulator.port, "GET", "/_emulator/faults")) == (200, {"hang": True})


@pytest.mark.parametrize(
    ("faults", "words"),
    [
        ({"status": 99}, "status"),
        ({"status": "503"}, "status: must be an integer"),
        ({"rate": 1.5}, "rate"),
        ({"latency": 5}, "latency: unknown fault"),
        ({"status": 503, "reset": True}, "status and reset"),
        ({"hang": 1}, "hang: must be true or false"),
        ({"retry_after": 3}, "only meaningful with a status"),
        ({"down": True}, "for_ms or use a control port"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_faults_are_refused_with_the_reason(
    emulator: Emulator, http: aiohttp.ClientSession, faults: Any, words: str
) -> None:
    status, answer = await control(http, emulator.port, "POST", "/_emulator/faults", faults)
    assert status == 400
    assert words in answer["error"]
    assert emulator.faults == Faults()


def test_faults_validate_in_python_too() -> None:
    with pytest.raises(FaultError, match="latency_ms"):
        Faults(latency_ms=-1)


def test_unknown_shape_names_the_known_ones() -> None:
    assert "sendgrid" in SHAPES
    with pytest.raises(ValueError, match=r"known: .*sendgrid"):
        Emulator("carrier-pigeon")


# -- the official SDK and the CLI entry point ------------------------------------------


async def test_official_sendgrid_sdk_is_accepted(emulator: Emulator) -> None:
    sendgrid = pytest.importorskip(
        "sendgrid", reason="the sendgrid SDK is not installed; SDK tests come with that dependency"
    )
    client = sendgrid.SendGridAPIClient(API_KEY, host=f"http://127.0.0.1:{emulator.port}")
    mail = sendgrid.Mail(
        from_email="noreply@example.com",
        to_emails="ana@example.org",
        subject="From the SDK",
        plain_text_content="hello",
    )
    response = await asyncio.to_thread(client.send, mail)
    assert response.status_code == 202
    (stored,) = emulator.messages
    assert response.headers["X-Message-Id"] == stored.id
    assert stored.body == mail.get()


async def test_run_emulator_serves_until_terminated(http: aiohttp.ClientSession) -> None:
    code = (
        "from mailmux.emulator import run_emulator; run_emulator('sendgrid', '127.0.0.1', 0, None)"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        match = re.search(r"sendgrid listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        sendgrid = SendGridVendor(
            "primary", AiohttpTransport(), api_key=API_KEY, base_url=f"http://127.0.0.1:{match[1]}"
        )
        result = await sendgrid.send(message(), TIMEOUT, MESSAGE_ID)
        await sendgrid.close()
        assert result.outcome is Outcome.ACCEPTED
        listed = await control(http, int(match[1]), "GET", "/_emulator/messages")
        assert [m["id"] for m in listed[1]] == [result.vendor_message_id]
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()
