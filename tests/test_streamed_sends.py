"""Large messages through every HTTP vendor: streamed bodies, byte for byte as before.

A message whose attachments reach `body.STREAM_FROM` gets a `StreamedBody`. With that
threshold out of reach, every body is plain bytes built by the code the vendors ran
before (orjson over base64 strings; Mailgun's multipart joined), so that is the
reference each streamed body must equal. Then each vendor sends a 3 MiB attachment to
its emulator, and SendGrid sends 20 MiB under tracemalloc to an emulator in another
process, so that only the sending side is measured.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import botocore.auth
import orjson
import pytest
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from test_registry import MINIMAL
from vendor_kit import MESSAGE_ID, NOW, PNG, at_now

from mailmux.config import VendorConfig
from mailmux.emulator import Emulator
from mailmux.message import Address, Attachment, Message
from mailmux.vendors import body as body_module
from mailmux.vendors.base import HttpRequest, HttpVendor, Outcome, UnsupportedFeature
from mailmux.vendors.body import StreamedBody
from mailmux.vendors.mailgun import MailgunVendor
from mailmux.vendors.registry import build_vendor

BIG = os.urandom(3 * 2**20 + 5)  # not a multiple of 3: the base64 ends padded
JSON_KINDS = ["sendgrid", "postmark", "sparkpost", "resend", "mailjet", "brevo", "ses"]
HTTP_KINDS = [*JSON_KINDS, "mailgun"]

#: Where each ESP's stored request keeps the attachments' content (base64 text).
STORED_ATTACHMENTS: dict[str, Callable[[Any], list[str]]] = {
    "sendgrid": lambda b: [a["content"] for a in b["attachments"]],
    "postmark": lambda b: [a["Content"] for a in b["Attachments"]],
    "sparkpost": lambda b: [a["data"] for a in b["content"]["attachments"]],
    "resend": lambda b: [a["content"] for a in b["attachments"]],
    "mailjet": lambda b: [a["Base64Content"] for a in b["Messages"][0]["Attachments"]],
    "brevo": lambda b: [a["content"] for a in b["attachment"]],
    "ses": lambda b: [a["RawContent"] for a in b["Content"]["Simple"]["Attachments"]],
    "mailgun": lambda b: [a["content"] for a in b["attachment"]],
}


def large_message(content: bytes = BIG, **changes: Any) -> Message:
    """What every ESP can carry, with a small attachment and then a large one."""
    fields: dict[str, Any] = {
        "sender": Address("noreply@example.com", "Zoë Shop"),
        "to": (Address("ana@example.org", "Ana María"),),
        "subject": "Your documents",
        "text": "Attached.\n",
        "html": "<p>Attached.</p>",
        "attachments": (
            Attachment("logo.png", PNG, "image/png"),
            Attachment("scan.pdf", content, "application/pdf"),
        ),
    }
    fields.update(changes)
    return Message(**fields)


def http_vendor(kind: str, **settings: Any) -> HttpVendor:
    config = VendorConfig.model_validate({"kind": kind, "weight": 1, **MINIMAL[kind], **settings})
    vendor = build_vendor("v1", config)
    assert isinstance(vendor, HttpVendor)
    at_now(vendor)  # type: ignore[type-var]  # SES signs at the clock's time
    if isinstance(vendor, MailgunVendor):
        vendor.boundary = lambda: "mailmux-fixed-boundary"
    return vendor


def wire(request: HttpRequest) -> bytes:
    body = request.body
    return body if isinstance(body, bytes) else b"".join(body.chunks())


def reference(kind: str, message: Message, monkeypatch: pytest.MonkeyPatch) -> HttpRequest:
    """The request as the vendor built it before: with nothing ever streamed."""
    with monkeypatch.context() as patch:
        patch.setattr(body_module, "STREAM_FROM", 2**62)
        request = http_vendor(kind).build_request(message, MESSAGE_ID)
    assert isinstance(request.body, bytes)
    return request


# -- byte for byte ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_a_streamed_body_is_the_request_the_vendor_built_before(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = large_message()
    before = reference(kind, message, monkeypatch)
    request = http_vendor(kind).build_request(message, MESSAGE_ID)

    assert isinstance(request.body, StreamedBody)
    assert wire(request) == before.body
    assert len(request.body) == len(before.body)  # the Content-Length aiohttp will send
    assert request.headers == before.headers  # SES: the same signature
    # The large attachment is a part over the message's own bytes, not a copy of them.
    assert any(getattr(part, "data", part) is BIG for part in request.body.parts)


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_the_reference_is_plain_orjson_over_base64_strings(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = reference(kind, large_message(), monkeypatch).body
    decoded = orjson.loads(before)
    assert orjson.dumps(decoded) == before
    assert STORED_ATTACHMENTS[kind](decoded) == [
        base64.b64encode(PNG).decode(),
        base64.b64encode(BIG).decode(),
    ]


@pytest.mark.parametrize("kind", ["ses", "mailgun"])
def test_raw_mime_is_streamed_from_the_message_itself(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\n" + BIG
    message = large_message(raw_mime=raw, attachments=())
    request = http_vendor(kind).build_request(message, MESSAGE_ID)
    assert isinstance(request.body, StreamedBody)
    assert wire(request) == reference(kind, message, monkeypatch).body
    assert any(getattr(part, "data", part) is raw for part in request.body.parts)


def test_ses_signs_a_streamed_body_as_botocore_signs_its_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request = http_vendor("ses").build_request(large_message(), MESSAGE_ID)
    assert isinstance(request.body, StreamedBody)
    pinned = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: pinned)
    plain = AWSRequest(
        method="POST",
        url=request.url,
        headers={"Content-Type": "application/json"},
        data=wire(request),
    )
    botocore.auth.SigV4Auth(Credentials("AKID", "s"), "ses", "eu-west-1").add_auth(plain)
    assert dict(plain.headers.items()) == request.headers


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_small_messages_keep_a_bytes_body(kind: str) -> None:
    request = http_vendor(kind).build_request(large_message(b"%PDF-1.4 small"), MESSAGE_ID)
    assert isinstance(request.body, bytes)


# -- size limits, from the computed length ------------------------------------------------

#: Each ESP's request limit and the attachment size that takes the request past it.
LIMITS = [
    ("sendgrid", "30 MB", 23 * 2**20),
    ("postmark", "10 MB", 8 * 2**20),
    ("sparkpost", "20 MB", 16 * 2**20),
    ("ses", "40 MB", 31 * 2**20),
    ("mailgun", "25 MB", 25 * 2**20 + 1),
]


@pytest.mark.parametrize(("kind", "limit", "size"), LIMITS)
def test_a_request_over_the_limit_is_refused_without_building_it(
    kind: str, limit: str, size: int
) -> None:
    vendor = http_vendor(kind)
    message = large_message(bytes(size))
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedFeature, match=f"at most {limit}"):
            vendor.build_request(message, MESSAGE_ID)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak / 2**20:.1f} MiB allocated to refuse it"


# -- to each emulator and back ---------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_large_attachment_reaches_the_emulator_intact(kind: str) -> None:
    emulator = Emulator(kind)
    await emulator.start()
    vendor = http_vendor(kind, base_url=f"http://127.0.0.1:{emulator.port}")
    try:
        result = await vendor.send(large_message(), 30.0, MESSAGE_ID)
        assert result.outcome is Outcome.ACCEPTED, result.reason
        (stored,) = emulator.messages
        contents = STORED_ATTACHMENTS[kind](stored.body)
        assert [base64.b64decode(c) for c in contents] == [PNG, BIG]
    finally:
        await vendor.close()
        await emulator.stop()


# -- memory ------------------------------------------------------------------------------------


@pytest.fixture
async def emulator_process() -> AsyncIterator[str]:
    """A SendGrid emulator in a process of its own (what it allocates is not ours)."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mailmux", "emulate", "--shape", "sendgrid", "--port", "0"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            banner = (await process.stdout.readline()).decode()
        assert "listening on " in banner, banner
        yield banner.split("listening on ", 1)[1].split(",")[0].strip()
    finally:
        process.terminate()
        await process.wait()


async def test_sending_20_mib_allocates_no_copy_of_it(
    emulator_process: str, session: aiohttp.ClientSession
) -> None:
    vendor = http_vendor("sendgrid", base_url=emulator_process)
    content = os.urandom(20 * 2**20)
    message = large_message(content)
    try:
        warm_up = await vendor.send(large_message(PNG), 10.0, MESSAGE_ID)  # session, connection
        assert warm_up.outcome is Outcome.ACCEPTED
        tracemalloc.start()
        try:
            result = await vendor.send(message, 60.0, MESSAGE_ID)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await vendor.close()
    assert result.outcome is Outcome.ACCEPTED, result.reason
    # Before: the base64 text, orjson's output buffer and an exact copy (~280 MiB traced).
    assert peak <= 2 * 2**20, f"peak {peak / 2**20:.1f} MiB above what existed before"
    async with session.get(f"{emulator_process}/_emulator/messages") as answer:
        stored = orjson.loads(await answer.read())
    assert base64.b64decode(stored[-1]["body"]["attachments"][1]["content"]) == content
