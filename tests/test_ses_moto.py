"""mailmux's SES adapter against moto, a real AWS emulator started here on 127.0.0.1.

moto's fidelity limits shape what can be compared (esp-contracts.md): for Simple content
it keeps the sender, destinations, subject and one body (Html when both are present) and
ignores headers, attachments, Reply-To and tags; for Raw it keeps the MIME as sent, and
its destinations are the explicit Destination followed by the To/Cc header addresses.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
import orjson
import pytest
from vendor_kit import MESSAGE_ID

from mailmux.message import Address, Attachment, Message
from mailmux.mime import parse_mime
from mailmux.vendors.base import AiohttpTransport, Outcome
from mailmux.vendors.ses import SesVendor

REGION = "us-east-1"
TIMEOUT = 10.0
_RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")


class MotoServer:
    """`python -m moto.server` on an ephemeral port; its log is drained so it never blocks."""

    def __init__(self, config_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_CONFIG_FILE"] = str(config_dir / "config")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(config_dir / "credentials")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.log: deque[bytes] = deque(maxlen=50)
        assert self._process.stderr is not None
        for line in self._process.stderr:  # werkzeug says where it listens once it does
            self.log.append(line)
            found = _RUNNING.search(line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            self.stop()
            raise RuntimeError(f"moto_server did not start: {b''.join(self.log)!r}")
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read_log(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self.log.append(line)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto-aws"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def http(moto: MotoServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{moto.url}/moto-api/reset") as response:
            assert response.status == 200
        yield session


@pytest.fixture
async def vendor(moto: MotoServer) -> AsyncIterator[SesVendor]:
    ses = SesVendor(
        "aws",
        AiohttpTransport(),
        region=REGION,
        access_key_id="testing",
        secret_access_key="testing",
        base_url=moto.url,
    )
    yield ses
    await ses.close()


async def verify_identity(moto: MotoServer, identity: str) -> None:
    """What an operator does once in the AWS console, done with boto3."""

    def create() -> None:
        client = boto3.client(
            "sesv2",
            endpoint_url=moto.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_email_identity(EmailIdentity=identity)
        client.close()

    await asyncio.to_thread(create)


async def sent_by_moto(http: aiohttp.ClientSession, moto: MotoServer) -> dict[str, Any]:
    async with http.get(f"{moto.url}/moto-api/data.json") as response:
        assert response.status == 200
        ses: dict[str, Any] = orjson.loads(await response.read())["ses"]
        return ses


def mailbox(text: str) -> Address:
    name, addr = email.utils.parseaddr(text)
    return Address(addr, str(make_header(decode_header(name))) if name else None)


def message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "sender": Address("noreply@example.com", "Zoë Shop"),
        "to": (Address("ana@example.org", "Ana María"), Address("bo@example.net")),
        "cc": (Address("chen@example.org", "陈伟"),),
        "bcc": (Address("audit@example.net"),),
        "reply_to": (Address("help@example.com"),),
        "subject": "Receipt №7 ✓",
        "text": "Thanks.\n",
        "html": "<p>Thanks.</p>\n",
        "headers": {"X-Order": "7"},
        "attachments": (Attachment("reçu.pdf", b"%PDF-1.4\n", "application/pdf"),),
        "tags": ("receipt",),
        "metadata": {"order": "7"},
    }
    fields.update(changes)
    return Message(**fields)


async def test_simple_content_reaches_moto(
    moto: MotoServer, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    await verify_identity(moto, "example.com")
    sent = [message(), message(subject="Plain only", html=None, attachments=())]

    results = [await vendor.send(m, TIMEOUT, MESSAGE_ID) for m in sent]

    assert [(r.outcome, r.status) for r in results] == [(Outcome.ACCEPTED, 200)] * 2
    kept = (await sent_by_moto(http, moto))["Message"]
    assert [m["id"] for m in kept] == [r.vendor_message_id for r in results]
    for original, stored in zip(sent, kept, strict=True):
        assert mailbox(stored["source"]) == original.sender
        destinations = stored["destinations"]
        assert [mailbox(a) for a in destinations["ToAddresses"]] == list(original.to)
        assert [mailbox(a) for a in destinations["CcAddresses"]] == list(original.cc)
        assert [mailbox(a) for a in destinations["BccAddresses"]] == list(original.bcc)
        assert stored["subject"] == original.subject
        assert stored["body"] == (original.html or original.text)  # moto keeps one body


@pytest.mark.parametrize("headers", [{"X-Order": "7"}, {"X-Note": "naïve"}], ids=["simple", "raw"])
async def test_a_bcc_only_message_reaches_moto(
    moto: MotoServer, vendor: SesVendor, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    await verify_identity(moto, "example.com")
    hidden = (Address("audit@example.net"), Address("boss@example.net"))

    result = await vendor.send(
        message(to=(), cc=(), bcc=hidden, headers=headers), TIMEOUT, MESSAGE_ID
    )

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    kept = await sent_by_moto(http, moto)
    if "X-Note" in headers:
        (stored,) = kept["RawMessage"]
        assert stored["destinations"] == [a.email for a in hidden]  # none from the headers
        assert "audit@" not in stored["raw_data"] and "boss@" not in stored["raw_data"]
    else:
        (stored,) = kept["Message"]
        assert stored["destinations"] == {"BccAddresses": [a.email for a in hidden]}


@pytest.mark.parametrize(
    "changes",
    [
        {
            "raw_mime": (
                "From: Zoë Shop <noreply@example.com>\r\nTo: Ana <ana@example.org>\r\n"
                "Cc: chen@example.org\r\nSubject: Raw ✓\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
            ).encode()
        },
        {"headers": {"X-Note": "naïve café"}},  # Simple headers are ASCII only: goes Raw
    ],
    ids=["raw-mime", "forced-raw"],
)
async def test_raw_content_reaches_moto(
    moto: MotoServer,
    vendor: SesVendor,
    http: aiohttp.ClientSession,
    changes: dict[str, Any],
) -> None:
    await verify_identity(moto, "example.com")
    sent = message(**changes)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (stored,) = (await sent_by_moto(http, moto))["RawMessage"]
    assert stored["id"] == result.vendor_message_id
    assert stored["source"] == sent.sender.email
    envelope = [a.email for a in (*sent.to, *sent.cc, *sent.bcc)]
    destinations = stored["destinations"]
    assert destinations[: len(envelope)] == envelope
    # moto appends the To/Cc header addresses: every one of them is in the envelope.
    assert {mailbox(a).email for a in destinations[len(envelope) :]} <= set(envelope)
    raw = stored["raw_data"].encode()
    if sent.raw_mime is not None:
        assert raw.replace(b"\r\n", b"\n") == sent.raw_mime.replace(b"\r\n", b"\n")
        return
    back = parse_mime(raw)
    assert (back.sender, back.to, back.cc, back.reply_to) == (
        sent.sender,
        sent.to,
        sent.cc,
        sent.reply_to,
    )
    assert (back.subject, back.text, back.html, back.headers) == (
        sent.subject,
        sent.text,
        sent.html,
        sent.headers,
    )
    assert back.attachments == sent.attachments


async def test_an_unverified_sender_is_vendor_config(
    moto: MotoServer, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    await verify_identity(moto, "example.org")  # not the sender's domain

    simple = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    raw = await vendor.send(message(headers={"X-Note": "naïve"}), TIMEOUT, MESSAGE_ID)

    for result in (simple, raw):
        assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, 400)
        assert "MessageRejected" in result.reason
        assert "noreply@example.com" in result.reason
    assert "not verified" in simple.reason
    assert "did not have authority" in raw.reason.lower()
    kept = await sent_by_moto(http, moto)
    assert (kept["Message"], kept["RawMessage"]) == ([], [])
