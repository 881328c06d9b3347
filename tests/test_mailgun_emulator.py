"""The Mailgun emulator shape over real sockets: round trips, the official SDK, faults."""

from __future__ import annotations

import asyncio
import base64
import email.utils
from email import policy
from email.parser import BytesParser
from typing import Any

import aiohttp
import pytest
from emulator_kit import (
    TIMEOUT,
    emulator_fixture,
    http_fixture,
    quoted_names_message,
    read_back,
    set_faults,
    vendor_fixture,
)
from vendor_kit import MESSAGE_ID

from mailmux.emulator import Emulator
from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import Outcome
from mailmux.vendors.mailgun import MailgunVendor

API_KEY = "key-emulator-test-1234"
DOMAIN = "mg.example.com"
RAW = (
    b"From: Shop <noreply@example.com>\r\nTo: ana@example.org\r\nSubject: raw\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nh\xc3\xa9llo\r\n"
)

emulator = emulator_fixture("mailgun")
vendor = vendor_fixture(MailgunVendor, "backup", api_key=API_KEY, domain=DOMAIN)
http = http_fixture()


def addresses(values: list[str]) -> tuple[Address, ...]:
    return tuple(Address(addr, name or None) for name, addr in email.utils.getaddresses(values))


def attachment(stored: dict[str, Any], *, inline: bool) -> Attachment:
    filename = stored["filename"]
    return Attachment(
        filename if not inline else "logo.png",  # Mailgun names an inline part by its cid
        base64.b64decode(stored["content"]),
        stored["content_type"],
        inline=inline,
        content_id=filename if inline else None,
    )


# -- round trips -------------------------------------------------------------------


async def test_a_rich_message_reads_back_field_by_field(
    emulator: Emulator, vendor: MailgunVendor, http: aiohttp.ClientSession
) -> None:
    sent = quoted_names_message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == stored["id"]
    assert stored["headers"][":path"] == f"/v3/{DOMAIN}/messages"
    assert stored["headers"]["authorization"] == "Basic api:…1234"
    form = stored["body"]
    (sender,) = addresses([form["from"]])
    assert sender == sent.sender
    assert addresses(form["to"]) == sent.to
    assert addresses(form["cc"]) == sent.cc
    assert addresses(form["bcc"]) == sent.bcc
    assert addresses([form["h:Reply-To"]]) == sent.reply_to
    assert (form["subject"], form["text"], form["html"]) == (sent.subject, sent.text, sent.html)
    headers = {k[2:]: v for k, v in form.items() if k.startswith("h:") and k != "h:Reply-To"}
    assert headers == sent.headers
    assert form["o:tag"] == list(sent.tags)
    assert {k[2:]: v for k, v in form.items() if k.startswith("v:")} == sent.metadata
    (inline,) = form["inline"]
    (regular,) = form["attachment"]
    assert (attachment(inline, inline=True), attachment(regular, inline=False)) == sent.attachments


async def test_raw_mime_reads_back_byte_for_byte_with_its_envelope(
    emulator: Emulator, vendor: MailgunVendor, http: aiohttp.ClientSession
) -> None:
    sent = Message(
        sender=Address("noreply@example.com", "Shop"),
        to=(Address("ana@example.org"),),
        bcc=(Address("audit@example.com"),),
        tags=("raw",),
        metadata={"k": "v"},
        raw_mime=RAW,
    )
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == stored["id"]
    assert stored["headers"][":path"] == f"/v3/{DOMAIN}/messages.mime"
    form = stored["body"]
    assert form["to"] == ["ana@example.org", "audit@example.com"]
    assert (form["o:tag"], form["v:k"]) == (["raw"], "v")
    assert base64.b64decode(form["message"]["content"]) == RAW
    assert form["message"]["content_type"] == "message/rfc822"


async def test_a_bcc_only_message_arrives_as_mime_that_names_no_bcc_recipient(
    emulator: Emulator, vendor: MailgunVendor, http: aiohttp.ClientSession
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = quoted_names_message(to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (stored,) = await read_back(http, emulator.port)
    assert stored["headers"][":path"] == f"/v3/{DOMAIN}/messages.mime"
    form = stored["body"]
    assert form["to"] == ["audit@example.com", "boss@example.com"]  # the envelope
    raw = base64.b64decode(form["message"]["content"])
    mime = BytesParser(policy=policy.default).parsebytes(raw)
    assert str(mime["To"]) == "undisclosed-recipients:;"
    assert mime["Cc"] is None and mime["Bcc"] is None
    assert b"audit@" not in raw and b"boss@" not in raw and b"Boss" not in raw
    assert mime["Subject"] == sent.subject


# -- Mailgun's own checks -------------------------------------------------------------


def basic(user: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [None, basic("api", ""), basic("user", API_KEY), f"Bearer {API_KEY}", "Basic ***"],
)
async def test_missing_or_wrong_auth_is_a_bare_forbidden(
    emulator: Emulator, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    url = f"http://127.0.0.1:{emulator.port}/v3/{DOMAIN}/messages"
    data = {"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t"}
    async with http.post(url, data=data, headers=headers) as response:
        assert response.status == 401
        assert await response.text() == "Forbidden"
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("messages", {"to": "b@example.com", "subject": "s", "text": "t"}, "'from' parameter"),
        ("messages", {"from": "a@example.com", "subject": "s", "text": "t"}, "'to' parameter"),
        (
            "messages",
            {"from": "a@example.com", "bcc": "b@example.com", "subject": "s", "text": "t"},
            "'to' parameter",
        ),
        ("messages", {"from": "a@example.com", "to": "b@example.com", "text": "t"}, "'subject'"),
        ("messages", {"from": "a@example.com", "to": "b@example.com", "subject": "s"}, "'text'"),
        ("messages.mime", {"to": "b@example.com"}, "'message' parameter"),
        ("messages.mime", {"message": "not a file"}, "'to' parameter"),
    ],
)
async def test_a_form_mailgun_would_refuse_is_400_with_its_message(
    emulator: Emulator, http: aiohttp.ClientSession, path: str, data: dict[str, str], message: str
) -> None:
    url = f"http://127.0.0.1:{emulator.port}/v3/{DOMAIN}/{path}"
    async with http.post(url, data=data, headers={"Authorization": basic("api", API_KEY)}) as r:
        assert r.status == 400
        assert message in (await r.json())["message"]
    assert emulator.messages == []


async def test_a_body_that_is_not_a_form_is_400(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{emulator.port}/v3/{DOMAIN}/messages"
    auth = {"Authorization": basic("api", API_KEY)}
    async with http.post(url, json={"from": "a@example.com"}, headers=auth) as response:
        assert response.status == 400
        assert "application/json" in (await response.json())["message"]


async def test_a_urlencoded_form_is_stored_with_repeatable_fields_as_lists(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{emulator.port}/v3/{DOMAIN}/messages"
    data = [
        ("from", "a@example.com"),
        ("to", "b@example.com"),
        ("subject", "s"),
        ("text", "t"),
        ("v:k", "1"),
        ("v:k", "2"),
    ]
    async with http.post(url, data=data, headers={"Authorization": basic("api", API_KEY)}) as r:
        assert r.status == 200
        answer = await r.json()
    (stored,) = emulator.messages
    assert answer == {"id": f"<{stored.id}>", "message": "Queued. Thank you."}
    assert stored.body == {
        "from": "a@example.com",
        "to": ["b@example.com"],
        "subject": "s",
        "text": "t",
        "v:k": ["1", "2"],
    }


# -- faults ----------------------------------------------------------------------------


async def test_an_injected_503_has_mailgun_s_body_and_is_retriable(
    emulator: Emulator, vendor: MailgunVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 503})
    url = f"http://127.0.0.1:{emulator.port}/v3/{DOMAIN}/messages"
    async with http.post(url, data={}) as response:
        assert response.status == 503
        assert await response.json() == {"message": "Emulated fault: HTTP 503"}

    result = await vendor.send(quoted_names_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert result.reason == "Emulated fault: HTTP 503"
    assert emulator.messages == []


async def test_an_injected_429_is_rate_limited_with_its_retry_after(
    emulator: Emulator, vendor: MailgunVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 429, "retry_after": 7})
    result = await vendor.send(quoted_names_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


async def test_an_injected_401_is_forbidden_and_vendor_config(
    emulator: Emulator, vendor: MailgunVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 401})
    result = await vendor.send(quoted_names_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.reason) == (Outcome.VENDOR_CONFIG, "API key rejected: Forbidden")


# -- the official SDK --------------------------------------------------------------------


async def test_official_mailgun_sdk_sends_a_form_and_raw_mime(emulator: Emulator) -> None:
    client_module = pytest.importorskip("mailgun.client", reason="the mailgun SDK is not installed")
    data = {
        "from": "Shop <noreply@example.com>",
        "to": ["ana@example.org", "bo@example.net"],
        "subject": "From the SDK",
        "text": "hello",
        "o:tag": "sdk",
        "h:X-Order": "7",
        "v:order": "7",
    }
    files = [("attachment", ("a.txt", b"hello", "text/plain"))]

    def send() -> tuple[Any, Any]:
        with client_module.Client(
            auth=("api", API_KEY), api_url=f"http://127.0.0.1:{emulator.port}"
        ) as client:
            form = client.messages.create(data=data, files=files, domain=DOMAIN)
            mime = client.mimemessage.create(
                data={"to": "ana@example.org"}, files={"message": RAW}, domain=DOMAIN
            )
            return form, mime

    form_response, mime_response = await asyncio.to_thread(send)

    assert (form_response.status_code, mime_response.status_code) == (200, 200)
    first, second = emulator.messages
    assert form_response.json() == {"id": f"<{first.id}>", "message": "Queued. Thank you."}
    assert mime_response.json()["id"] == f"<{second.id}>"
    assert first.headers["user-agent"].startswith("mailgun-api-python/")
    assert first.body == {
        **data,
        "o:tag": ["sdk"],
        "attachment": [
            {
                "filename": "a.txt",
                "content_type": "text/plain",
                "content": base64.b64encode(b"hello").decode(),
            }
        ],
    }
    assert second.body["to"] == ["ana@example.org"]
    assert base64.b64decode(second.body["message"]["content"]) == RAW
