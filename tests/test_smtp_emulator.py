"""The SMTP emulator over real sockets: what it stores, its control API, its faults, its
recipient rules, and `mailmux emulate --shape smtp`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import aiosmtplib
import orjson
import pytest
from vendor_kit import MESSAGE_ID

from mailmux.cli import CliError, cmd_emulate
from mailmux.emulator import Faults, SmtpEmulator
from mailmux.emulator.smtp_session import reply_for_status
from mailmux.message import Address, Message
from mailmux.vendors.base import Outcome
from mailmux.vendors.smtp import SmtpVendor

TIMEOUT = 5.0
RAW = (
    b"From: =?utf-8?q?Zo=C3=AB?= <noreply@example.com>\r\n"
    b"To: ana@example.org\r\n"
    b"Subject: =?utf-8?q?Receipt_=E2=84=9642?=\r\n"
    b"X-Order: 42\r\n"
    b"\r\n"
    b"Thanks.\r\n"
    b".leading dot survives\r\n"
)


def message(*to: str) -> Message:
    return Message(
        sender=Address("noreply@example.com"),
        to=tuple(Address(a) for a in (to or ("ana@example.org",))),
        subject="Hello",
        text="Hello.\n",
    )


@pytest.fixture
async def emulator() -> AsyncIterator[SmtpEmulator]:
    server = SmtpEmulator(control_port=0, rng=random.Random(20240601))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def vendor(emulator: SmtpEmulator) -> AsyncIterator[SmtpVendor]:
    smtp = SmtpVendor(
        "relay", host="127.0.0.1", port=emulator.port, tls="none", local_hostname="client.test"
    )
    yield smtp
    await smtp.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(port: int) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, local_hostname="client.test", start_tls=False
    )


async def control(
    http: aiohttp.ClientSession, emulator: SmtpEmulator, method: str, path: str, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    url = f"http://127.0.0.1:{emulator.control_port}{path}"
    async with http.request(method, url, data=data) as response:
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw else None), dict(response.headers)


# -- what it stores ----------------------------------------------------------------------


async def test_an_accepted_message_is_listed_like_the_http_emulators(
    emulator: SmtpEmulator, http: aiohttp.ClientSession
) -> None:
    async with client(emulator.port) as smtp:
        errors, reply = await smtp.sendmail(
            "noreply@example.com", ["ana@example.org", "bcc@example.net"], RAW
        )
    assert errors == {}
    queued = re.fullmatch(r"2\.0\.0 Ok: queued as ([0-9A-F]+)", reply)
    assert queued is not None

    status, listed, headers = await control(http, emulator, "GET", "/_emulator/messages")
    assert status == 200
    assert (headers["X-Emulator-Accepted-Total"], headers["X-Emulator-Sessions"]) == ("1", "1")
    (stored,) = listed
    assert stored["id"] == queued[1]
    assert abs(datetime.fromisoformat(stored["received_at"]).timestamp() - time.time()) < 60
    assert stored["headers"] == {"session": "1", "helo": "client.test", "tls": "none", "login": ""}
    assert stored["body"] == {
        "mail_from": "noreply@example.com",
        "rcpt_to": ["ana@example.org", "bcc@example.net"],
        "mail_options": [f"SIZE={len(RAW)}"],
        "subject": "Receipt №42",
        "headers": [
            ["From", "Zoë <noreply@example.com>"],
            ["To", "ana@example.org"],
            ["Subject", "Receipt №42"],
            ["X-Order", "42"],
        ],
        "raw_mime": base64.b64encode(RAW).decode(),  # dot-stuffing undone
    }
    (kept,) = emulator.messages
    assert (kept.id, kept.body) == (stored["id"], stored["body"])


async def test_a_bcc_only_message_reaches_every_recipient_and_names_none(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = Message(
        sender=Address("noreply@example.com"), to=(), bcc=hidden, subject="Hi", text="x\n"
    )

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (stored,) = emulator.messages
    assert stored.body["rcpt_to"] == ["audit@example.com", "boss@example.com"]
    assert ["To", "undisclosed-recipients:;"] in stored.body["headers"]
    raw = base64.b64decode(stored.body["raw_mime"])
    assert b"audit@" not in raw and b"boss@" not in raw and b"Boss" not in raw


async def test_a_header_that_does_not_parse_is_listed_raw(emulator: SmtpEmulator) -> None:
    raw = b"From: noreply@example.com\r\nTo: bob@\r\nSubject: odd\r\n\r\nhi\r\n"
    async with client(emulator.port) as smtp:
        await smtp.sendmail("noreply@example.com", ["bob@example.org"], raw)
    (stored,) = emulator.messages
    assert stored.body["headers"] == [
        ["From", "noreply@example.com"],
        ["To", "bob@"],
        ["Subject", "odd"],
    ]


async def test_delete_clears_the_store_and_the_totals_keep_counting(
    emulator: SmtpEmulator, vendor: SmtpVendor, http: aiohttp.ClientSession
) -> None:
    ids = [(await vendor.send(message(), TIMEOUT, MESSAGE_ID)).vendor_message_id for _ in range(3)]
    assert [m.id for m in emulator.messages] == ids
    assert len(set(ids)) == 3

    assert (await control(http, emulator, "DELETE", "/_emulator/messages"))[0] == 204
    assert emulator.messages == []
    assert (emulator.accepted_total, emulator.sessions) == (3, 1)


async def test_the_store_is_bounded_and_keeps_the_newest() -> None:
    server = SmtpEmulator(max_messages=2)
    await server.start()
    smtp = SmtpVendor("relay", host="127.0.0.1", port=server.port, tls="none")
    try:
        ids = [
            (await smtp.send(message(), TIMEOUT, MESSAGE_ID)).vendor_message_id for _ in range(4)
        ]
        assert [m.id for m in server.messages] == ids[2:]
        assert server.accepted_total == 4
    finally:
        await smtp.close()
        await server.stop()


# -- what a relay checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "code", "text"),
    [
        ("reject-ana@example.org", 550, "5.1.1 <reject-ana@example.org>: Recipient address"),
        ("defer-ana@example.org", 451, "4.2.0 <defer-ana@example.org>: Recipient address"),
        ("deny-ana@example.org", 554, "5.7.1 <deny-ana@example.org>: Relay access denied"),
    ],
)
async def test_recipients_pick_their_reply_by_prefix(
    emulator: SmtpEmulator, recipient: str, code: int, text: str
) -> None:
    async with client(emulator.port) as smtp:
        await smtp.mail("noreply@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(recipient)
        assert (await smtp.rcpt("ana@example.org")).code == 250
    assert refused.value.code == code
    assert refused.value.message.startswith(text)


async def test_with_auth_mail_needs_a_login_and_without_auth_none_is_offered() -> None:
    server = SmtpEmulator(auth=("user", "pw"), auth_mechanisms=("LOGIN",))
    await server.start()
    try:
        async with client(server.port) as smtp:
            await smtp.ehlo()
            assert smtp.server_auth_methods == ["login"]
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.mail("noreply@example.com")
            assert (refused.value.code, refused.value.message) == (
                530,
                "5.7.0 Authentication required",
            )
            await smtp.login("user", "pw")
            assert (await smtp.mail("noreply@example.com")).code == 250
    finally:
        await server.stop()


async def test_without_auth_none_is_offered(emulator: SmtpEmulator) -> None:
    async with client(emulator.port) as smtp:
        await smtp.ehlo()
        assert not smtp.supports_extension("auth")
        assert smtp.supports_extension("smtputf8")
        assert smtp.supports_extension("8bitmime")


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"implicit_tls": True}, "need a tls_context"),
        ({"require_starttls": True}, "need a tls_context"),
        ({"auth_mechanisms": ("CRAM-MD5",)}, "auth_mechanisms: PLAIN and/or LOGIN"),
        ({"auth_mechanisms": ()}, "auth_mechanisms: PLAIN and/or LOGIN"),
        ({"max_messages": 0}, "max_messages must be ≥ 1"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SmtpEmulator(**settings)


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reply"),
    [
        (400, "554 5.6.0 Message content rejected"),
        (401, "550 5.7.1 Sender not authorized"),
        (403, "550 5.7.1 Sender not authorized"),
        (404, "550 5.1.1 Mailbox unavailable"),
        (413, "552 5.3.4 Message size exceeds fixed maximum message size"),
        (429, "454 4.7.0 Throttling failure: Maximum sending rate exceeded"),
        (422, "554 5.0.0 Message rejected (injected status 422)"),
        (500, "451 4.3.0 Temporary failure, try again later (injected status 500)"),
        (503, "451 4.3.0 Temporary failure, try again later (injected status 503)"),
    ],
)
def test_http_like_statuses_become_smtp_replies(status: int, reply: str) -> None:
    assert reply_for_status(status) == reply


async def test_faults_over_the_control_api(
    emulator: SmtpEmulator, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await control(http, emulator, "POST", "/_emulator/faults", {"status": 503})
    assert (status, answer) == (200, {"status": 503})
    assert (await control(http, emulator, "GET", "/_emulator/faults"))[:2] == (200, {"status": 503})
    assert emulator.faults == Faults(status=503)
    async with client(emulator.port) as smtp:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.sendmail("noreply@example.com", ["ana@example.org"], RAW)
    assert refused.value.code == 451

    assert (await control(http, emulator, "POST", "/_emulator/faults", {}))[:2] == (200, {})
    assert emulator.faults == Faults()
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", "the body is not valid JSON"),
        ({"status": 200}, "status: must be an error status 400 to 599, got 200"),
        ({"stauts": 503}, "stauts: unknown fault"),
    ],
)
async def test_bad_faults_are_refused_with_the_reason(
    emulator: SmtpEmulator, http: aiohttp.ClientSession, body: Any, error: str
) -> None:
    status, answer, _ = await control(http, emulator, "POST", "/_emulator/faults", body)
    assert (status, answer) == (400, {"error": error})
    assert emulator.faults == Faults()


async def test_latency_delays_the_reply_to_data(emulator: SmtpEmulator, vendor: SmtpVendor) -> None:
    emulator.set_faults(Faults(latency_ms=100))
    started = time.monotonic()
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert time.monotonic() - started >= 0.100
    assert result.outcome is Outcome.ACCEPTED


async def test_accept_keeps_the_message_though_the_reply_is_an_error(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    emulator.set_faults(Faults(status=503, accept=True))
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.RETRIABLE
    assert len(emulator.messages) == 1


async def test_a_hung_reply_comes_once_the_faults_expire(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    emulator.set_faults(Faults(hang=True, for_ms=100))
    started = time.monotonic()
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert time.monotonic() - started >= 0.100
    assert result.outcome is Outcome.ACCEPTED
    assert emulator.faults == Faults()


async def test_rate_hits_a_seeded_fraction_of_messages(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    emulator.set_faults(Faults(status=503, rate=0.5))
    outcomes = [(await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome for _ in range(20)]
    refused = outcomes.count(Outcome.RETRIABLE)
    assert 0 < refused < 20
    assert outcomes.count(Outcome.ACCEPTED) == emulator.accepted_total == 20 - refused


async def test_down_over_the_control_port_then_listening_again_on_the_same_port(
    emulator: SmtpEmulator, vendor: SmtpVendor, http: aiohttp.ClientSession
) -> None:
    port = emulator.port
    async with client(port) as smtp:
        await smtp.ehlo()
        assert (await control(http, emulator, "POST", "/_emulator/faults", {"down": True}))[
            0
        ] == 200
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.noop()  # the open session was dropped too
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.RETRIABLE

    assert (await control(http, emulator, "POST", "/_emulator/faults", {}))[0] == 200
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED
    assert emulator.port == port


async def test_down_for_a_while_comes_back_by_itself(
    emulator: SmtpEmulator, vendor: SmtpVendor
) -> None:
    emulator.set_faults(Faults(down=True, for_ms=100))
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.RETRIABLE
    assert await emulator.faults_changed() == Faults()
    assert (await vendor.send(message(), TIMEOUT, MESSAGE_ID)).outcome is Outcome.ACCEPTED


async def test_stop_ends_a_hung_session_at_once() -> None:
    server = SmtpEmulator()
    await server.start()
    server.set_faults(Faults(hang=True))
    async with client(server.port) as smtp:
        sending = asyncio.create_task(
            smtp.sendmail("noreply@example.com", ["ana@example.org"], RAW, timeout=30)
        )
        with pytest.raises(TimeoutError):  # no reply to DATA: the session hangs
            await asyncio.wait_for(asyncio.shield(sending), 0.2)
        await server.stop()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await asyncio.wait_for(sending, 5)
    assert server.messages == []


# -- the command line --------------------------------------------------------------------


def test_the_cli_knows_the_smtp_shape() -> None:
    args = argparse.Namespace(shape="carrier-pigeon", host="127.0.0.1", port=0, control_port=None)
    with pytest.raises(CliError, match=r"known: .*\bsmtp\b"):
        cmd_emulate(args)


async def test_run_emulator_serves_smtp_until_terminated(http: aiohttp.ClientSession) -> None:
    code = "from mailmux.emulator import run_emulator; run_emulator('smtp', '127.0.0.1', 0, None)"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        match = re.search(
            r"smtp listening on smtp://127\.0\.0\.1:(\d+), control on http://127\.0\.0\.1:(\d+)",
            line,
        )
        assert match, line
        smtp = SmtpVendor("relay", host="127.0.0.1", port=int(match[1]), tls="none")
        result = await smtp.send(message(), TIMEOUT, MESSAGE_ID)
        await smtp.close()
        assert result.outcome is Outcome.ACCEPTED
        url = f"http://127.0.0.1:{match[2]}/_emulator/messages"
        async with http.get(url) as response:
            assert [m["id"] for m in await response.json()] == [result.vendor_message_id]
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()
