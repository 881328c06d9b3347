"""The Postmark emulator shape over real sockets: round trips, postmarker, faults."""

from __future__ import annotations

import asyncio
import base64
import email.utils
from datetime import datetime
from functools import partial
from typing import Any

import aiohttp
import orjson
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
from mailmux.message import Address, Attachment
from mailmux.vendors.base import Outcome
from mailmux.vendors.postmark import PostmarkVendor

TOKEN = "server-token-emulator-5678"

emulator = emulator_fixture("postmark")
vendor = vendor_fixture(PostmarkVendor, "tx", api_key=TOKEN)
http = http_fixture()
#: Postmark takes one tag per message.
rich_message = partial(quoted_names_message, tags=("receipt",))


def url(emulator: Emulator) -> str:
    return f"http://127.0.0.1:{emulator.port}/email"


def addresses(value: str) -> tuple[Address, ...]:
    return tuple(Address(addr, name or None) for name, addr in email.utils.getaddresses([value]))


def attachment(stored: dict[str, str]) -> Attachment:
    cid = stored.get("ContentID")
    return Attachment(
        stored["Name"],
        base64.b64decode(stored["Content"]),
        stored["ContentType"],
        inline=cid is not None,
        content_id=None if cid is None else cid.removeprefix("cid:"),
    )


# -- round trip ---------------------------------------------------------------------


async def test_a_rich_message_reads_back_field_by_field(
    emulator: Emulator, vendor: PostmarkVendor, http: aiohttp.ClientSession
) -> None:
    sent = rich_message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == stored["id"]
    assert stored["headers"]["x-postmark-server-token"] == "…5678"
    assert stored["headers"]["accept"] == "application/json"
    body = stored["body"]
    assert addresses(body["From"]) == (sent.sender,)
    assert addresses(body["To"]) == sent.to
    assert addresses(body["Cc"]) == sent.cc
    assert addresses(body["Bcc"]) == sent.bcc
    assert addresses(body["ReplyTo"]) == sent.reply_to
    assert (body["Subject"], body["TextBody"], body["HtmlBody"]) == (
        sent.subject,
        sent.text,
        sent.html,
    )
    assert {h["Name"]: h["Value"] for h in body["Headers"]} == sent.headers
    assert (body["Tag"], body["Metadata"]) == ("receipt", sent.metadata)
    assert tuple(map(attachment, body["Attachments"])) == sent.attachments


async def test_a_bcc_only_message_arrives_without_to_and_is_answered_without_to(
    emulator: Emulator, vendor: PostmarkVendor, http: aiohttp.ClientSession
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = rich_message(to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == stored["id"]
    body = stored["body"]
    # Bcc is Postmark's to keep out of the headers; nothing else names a bcc recipient.
    assert body["Bcc"] == "audit@example.com, Boss <boss@example.com>"
    assert "To" not in body and "Cc" not in body
    shown = orjson.dumps({k: v for k, v in body.items() if k != "Bcc"})
    assert b"audit@" not in shown and b"boss@" not in shown


async def test_success_answers_like_postmark(
    emulator: Emulator, vendor: PostmarkVendor, http: aiohttp.ClientSession
) -> None:
    body = orjson.loads(vendor.build_request(rich_message(), MESSAGE_ID).body)
    async with http.post(url(emulator), json=body, headers={"X-Postmark-Server-Token": TOKEN}) as r:
        assert r.status == 200
        answer = await r.json()
    (stored,) = emulator.messages
    assert answer["MessageID"] == stored.id
    assert (answer["To"], answer["ErrorCode"], answer["Message"]) == (body["To"], 0, "OK")
    assert datetime.fromisoformat(answer["SubmittedAt"]).tzinfo is not None


# -- Postmark's own checks ---------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Postmark-Server-Token": " "}])
async def test_a_missing_token_is_401_with_error_code_10(
    emulator: Emulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    body = {"From": "a@example.com", "To": "b@example.com", "TextBody": "t"}
    async with http.post(url(emulator), json=body, headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["ErrorCode"] == 10
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", 402, "not valid JSON"),
        (b"[]", 403, "JSON object"),
        (b'{"To": "b@example.com", "TextBody": "t"}', 300, "'From'"),
        (b'{"From": "a@example.com", "To": null, "TextBody": "t"}', 300, "Zero recipients"),
        (b'{"From": "a@example.com", "Cc": "", "TextBody": "t"}', 300, "Zero recipients"),
        (b'{"From": "a@example.com", "To": "b@example.com"}', 300, "TextBody or an HtmlBody"),
        (b'{"From": "a@example.com", "To": ["b@example.com"], "TextBody": "t"}', 300, "string"),
        (b'{"From": "a", "To": "b", "TextBody": "t", "Headers": [{"Value": "v"}]}', 300, "Headers"),
        (b'{"From": "a", "To": "b", "TextBody": "t", "Attachments": [{}]}', 300, "Attachments"),
        (b'{"From": "a", "To": "b", "TextBody": "t", "Metadata": []}', 300, "Metadata"),
    ],
)
async def test_a_request_postmark_would_refuse_is_422_with_its_error_code(
    emulator: Emulator, http: aiohttp.ClientSession, body: bytes, code: int, words: str
) -> None:
    headers = {"X-Postmark-Server-Token": TOKEN, "Content-Type": "application/json"}
    async with http.post(url(emulator), data=body, headers=headers) as response:
        assert response.status == 422
        answer = await response.json()
    assert answer["ErrorCode"] == code
    assert words in answer["Message"]
    assert emulator.messages == []


async def test_a_message_without_to_is_taken_and_answered_without_to(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    headers = {"X-Postmark-Server-Token": TOKEN, "Content-Type": "application/json"}
    body = b'{"From": "a@example.com", "Bcc": "b@example.com", "TextBody": "t"}'
    async with http.post(url(emulator), data=body, headers=headers) as response:
        assert response.status == 200
        answer = await response.json()
    assert (answer["ErrorCode"], answer["MessageID"]) == (0, emulator.messages[0].id)
    assert "To" not in answer


async def test_more_than_50_recipients_are_refused_but_commas_in_quoted_names_do_not_count(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    headers = {"X-Postmark-Server-Token": TOKEN}
    many = ", ".join(f"r{i}@example.com" for i in range(49))
    body = {"From": "a@example.com", "To": many, "Cc": '"Doe, J." <j@example.com>'}
    body["TextBody"] = "t"
    async with http.post(url(emulator), json=body, headers=headers) as response:
        assert response.status == 200
    body["Bcc"] = "x@example.com"
    async with http.post(url(emulator), json=body, headers=headers) as response:
        assert response.status == 422
        assert "51 recipients" in (await response.json())["Message"]


async def test_a_body_that_is_not_json_typed_is_error_code_409(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    headers = {"X-Postmark-Server-Token": TOKEN, "Content-Type": "text/plain"}
    async with http.post(url(emulator), data=b"{}", headers=headers) as response:
        assert response.status == 422
        assert (await response.json())["ErrorCode"] == 409


# -- faults ------------------------------------------------------------------------------


async def test_an_injected_503_has_postmark_s_body_and_is_retriable(
    emulator: Emulator, vendor: PostmarkVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 503})
    async with http.post(url(emulator), json={}) as response:
        assert response.status == 503
        assert await response.json() == {"ErrorCode": 100, "Message": "Emulated fault: HTTP 503."}

    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert result.reason == "Emulated fault: HTTP 503."
    assert emulator.messages == []


async def test_an_injected_429_is_rate_limited_with_its_retry_after(
    emulator: Emulator, vendor: PostmarkVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 429, "retry_after": 7})
    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


@pytest.mark.parametrize(
    ("status", "outcome"), [(401, Outcome.VENDOR_CONFIG), (422, Outcome.PERMANENT)]
)
async def test_injected_401_and_422_carry_postmark_error_codes(
    emulator: Emulator,
    vendor: PostmarkVendor,
    http: aiohttp.ClientSession,
    status: int,
    outcome: Outcome,
) -> None:
    await set_faults(http, emulator.port, {"status": status})
    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (outcome, status)


# -- the official SDK ----------------------------------------------------------------------


async def test_postmarker_sends_with_its_nulls_and_reads_postmark_s_answers(
    emulator: Emulator,
) -> None:
    core = pytest.importorskip("postmarker.core", reason="postmarker is not installed")
    exceptions = pytest.importorskip("postmarker.exceptions")
    # A path prefix is dropped by postmarker's urljoin: the route must be at the root.
    client = core.PostmarkClient(
        server_token=TOKEN, root_api_url=f"http://127.0.0.1:{emulator.port}/ignored/"
    )

    def send() -> tuple[dict[str, Any], Any]:
        try:
            answer = client.emails.send(
                From="Shop <noreply@example.com>",
                To=["ana@example.org", "bo@example.net"],
                Subject="From postmarker",
                TextBody="hello",
                Tag="sdk",
                Metadata={"order": "7"},
                Headers={"X-Order": "7"},
                Attachments=[("a.txt", base64.b64encode(b"hi").decode(), "text/plain")],
            )
            with pytest.raises(exceptions.ClientError) as refused:
                client.emails.send(From="", To="ana@example.org", TextBody="x")
            return answer, refused.value
        finally:
            client.session.close()

    answer, refused = await asyncio.to_thread(send)

    (stored,) = emulator.messages
    assert answer["MessageID"] == stored.id
    assert answer["To"] == "ana@example.org,bo@example.net"
    assert stored.headers["user-agent"].startswith("Postmarker/")
    assert stored.body == {
        "From": "Shop <noreply@example.com>",
        "To": "ana@example.org,bo@example.net",
        "Cc": None,
        "Bcc": None,
        "Subject": "From postmarker",
        "Tag": "sdk",
        "HtmlBody": None,
        "TextBody": "hello",
        "Metadata": {"order": "7"},
        "ReplyTo": None,
        "Headers": [{"Name": "X-Order", "Value": "7"}],
        "TrackOpens": None,
        "TrackLinks": "None",
        "Attachments": [
            {
                "Name": "a.txt",
                "Content": base64.b64encode(b"hi").decode(),
                "ContentType": "text/plain",
            }
        ],
        "MessageStream": None,
    }
    assert refused.error_code == 300
