"""The SparkPost emulator shape over real sockets: round trip, SparkPost's checks, the
official SDK, and faults."""

from __future__ import annotations

import asyncio
import base64
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.utils import getaddresses
from functools import partial
from typing import Any

import aiohttp
import orjson
import pytest
from emulator_kit import (
    TIMEOUT,
    emulator_fixture,
    http_fixture,
    json_reply,
    numbered_message,
    post_to,
    read_back,
    set_faults,
    vendor_fixture,
)
from vendor_kit import MESSAGE_ID, PDF, PNG

from mailmux.emulator import Emulator, Faults
from mailmux.message import Address, Message
from mailmux.vendors.base import AiohttpTransport, Outcome
from mailmux.vendors.sparkpost import SparkPostVendor

API_KEY = "sp-emulator-test-key"

emulator = emulator_fixture("sparkpost")
vendor = vendor_fixture(SparkPostVendor, "backup", api_key=API_KEY)
http = http_fixture()
rich_message = partial(numbered_message, 1)


def addresses(header: str) -> list[Address]:
    """A header string as SparkPost would put it in the mail, decoded back to Addresses."""
    return [
        Address(addr, str(make_header(decode_header(name))) or None)
        for name, addr in getaddresses([header])
    ]


async def post(
    http: aiohttp.ClientSession, port: int, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    answer = await post_to(http, port, "/api/v1/transmissions", body, headers)
    return answer.status, json_reply(answer)


# -- round trip -----------------------------------------------------------------------


async def test_a_rich_message_arrives_field_by_field(
    emulator: Emulator, vendor: SparkPostVendor, http: aiohttp.ClientSession
) -> None:
    sent = rich_message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (stored,) = await read_back(http, emulator.port)
    assert stored["id"] == result.vendor_message_id
    assert stored["headers"]["authorization"] == "…-key"
    body = stored["body"]
    recipients = body["recipients"]
    assert [r["address"]["email"] for r in recipients] == [
        a.email for a in (*sent.to, *sent.cc, *sent.bcc)
    ]
    assert {r["address"].get("name") for r in recipients} == {"Ana María", "Bo, Jr.", "陈伟", None}
    for recipient in recipients:  # everyone's copy shows the same To header
        assert addresses(recipient["address"]["header_to"]) == list(sent.to)
        assert recipient["tags"] == list(sent.tags)
    content = body["content"]
    assert addresses(content["headers"].pop("CC")) == list(sent.cc)
    assert content["headers"] == sent.headers
    assert content["from"] == {"email": sent.sender.email, "name": sent.sender.name}
    assert addresses(content["reply_to"]) == list(sent.reply_to)
    assert (content["subject"], content["text"], content["html"]) == (
        sent.subject,
        sent.text,
        sent.html,
    )
    (attachment,) = content["attachments"]
    assert (attachment["name"], attachment["type"]) == ("reçu.pdf", "application/pdf")
    assert base64.b64decode(attachment["data"]) == PDF
    (image,) = content["inline_images"]  # named by its content id; no filename on SparkPost
    assert (image["name"], image["type"]) == ("logo@x", "image/png")
    assert base64.b64decode(image["data"]) == PNG
    assert body["metadata"] == sent.metadata
    assert body["options"] == {"perform_substitutions": False, "transactional": True}


async def test_raw_mime_arrives_unchanged(emulator: Emulator, vendor: SparkPostVendor) -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: raw\r\n\r\nhello\r\n"
    message = Message(
        sender=Address("a@example.com"),
        to=(Address("b@example.com"),),
        bcc=(Address("c@example.com"),),
        subject="raw",
        text="hello\n",
        raw_mime=raw,
    )
    result = await vendor.send(message, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (stored,) = emulator.messages
    assert stored.body["content"] == {"email_rfc822": raw.decode()}
    assert [r["address"]["email"] for r in stored.body["recipients"]] == [
        "b@example.com",
        "c@example.com",
    ]


async def test_a_bcc_only_message_arrives_as_mime_that_names_no_bcc_recipient(
    emulator: Emulator, vendor: SparkPostVendor
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = rich_message(to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (stored,) = emulator.messages
    recipients = stored.body["recipients"]
    assert [r["address"] for r in recipients] == [
        {"email": "audit@example.com"},
        {"email": "boss@example.com", "name": "Boss"},
    ]  # no header_to: no copy shows another recipient
    rfc822 = stored.body["content"]["email_rfc822"]
    mime = BytesParser(policy=policy.default).parsebytes(rfc822.encode())
    assert str(mime["To"]) == "undisclosed-recipients:;"
    assert mime["Cc"] is None and mime["Bcc"] is None
    assert "audit@" not in rfc822 and "boss@" not in rfc822 and "Boss" not in rfc822
    assert mime["Subject"] == sent.subject


async def test_ids_are_unique_and_the_answer_counts_recipients(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = orjson.loads(
        SparkPostVendor("x", AiohttpTransport(), api_key="k")
        .build_request(rich_message(), MESSAGE_ID)
        .body
    )
    answers = [await post(http, emulator.port, body, {"Authorization": API_KEY}) for _ in range(2)]
    assert [status for status, _ in answers] == [200, 200]
    first, second = (answer["results"] for _, answer in answers)
    assert first["id"] != second["id"]
    assert first == {
        "total_rejected_recipients": 0,
        "total_accepted_recipients": 4,
        "id": first["id"],
    }
    assert [m.id for m in emulator.messages] == [first["id"], second["id"]]


# -- SparkPost's own checks --------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer sp-emulator-test-key",
        "Basic !!!",
        f"Basic {base64.b64encode(b':').decode()}",
    ],
)
async def test_missing_or_wrong_auth_is_401_in_sparkpost_shape(
    emulator: Emulator, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, answer = await post(http, emulator.port, {}, headers)
    assert status == 401
    (error,) = answer["errors"]
    assert error["message"] == "Unauthorized."
    assert emulator.messages == []


async def test_basic_auth_with_the_key_as_user_is_accepted(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "recipients": [{"address": "b@example.com"}],
        "content": {"from": "a@example.com", "subject": "s", "text": "t"},
    }
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    status, answer = await post(http, emulator.port, body, {"Authorization": f"Basic {basic}"})
    assert status == 200
    assert answer["results"]["total_accepted_recipients"] == 1
    assert emulator.messages[0].headers["authorization"] == "…-key"


async def test_invalid_bodies_are_refused_with_sparkpost_codes(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    auth = {"Authorization": API_KEY}
    status, answer = await post(http, emulator.port, b"{not json", auth)  # SparkPost: 422
    assert (status, answer["errors"][0]["code"]) == (422, "1300")

    body = {
        "recipients": [{"address": {"name": "no email"}}],
        "content": {"subject": 3, "attachments": [{"name": "a.txt"}]},
    }
    status, answer = await post(http, emulator.port, body, auth)
    assert status == 422
    assert [(e["code"], e["description"]) for e in answer["errors"]] == [
        ("1400", "recipients[0].address: address.email is required for each recipient"),
        ("1300", "content.subject: must be a string, not a number"),
        ("1400", "content.from is a required field"),
        ("1400", "content.text or content.html is required"),
        ("1400", "content.attachments[0].type is a required field"),
        ("1400", "content.attachments[0].data is a required field"),
    ]
    status, answer = await post(http, emulator.port, {"recipients": []}, auth)
    assert [e["description"] for e in answer["errors"]] == [  # SparkPost's descriptions
        "recipients or list_id required",
        "content object or template_id required",
    ]
    assert emulator.messages == []


async def test_stored_lists_templates_and_rfc822_need_no_inline_content(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    auth = {"Authorization": API_KEY}
    bodies = [
        {"recipients": {"list_id": "staff"}, "content": {"template_id": "welcome"}},
        {
            "recipients": [{"address": "b@example.com"}],
            # SparkPost checks the From domain against the account's: raw MIME needs one.
            "content": {"email_rfc822": "From: a@example.com\r\nSubject: x\r\n\r\nhi"},
        },
    ]
    answers = [await post(http, emulator.port, body, auth) for body in bodies]
    assert [status for status, _ in answers] == [200, 200]
    assert [a["results"]["total_accepted_recipients"] for _, a in answers] == [0, 1]
    status, answer = await post(
        http,
        emulator.port,
        {"recipients": [{"address": "b@x.com"}], "content": {"email_rfc822": ""}},
        auth,
    )
    assert (status, answer["errors"][0]["description"]) == (422, "content.email_rfc822 is empty")


# -- the official SDK --------------------------------------------------------------------


def sparkpost_client(port: int) -> Any:
    sparkpost = pytest.importorskip("sparkpost", reason="the sparkpost SDK is not installed")
    client = sparkpost.SparkPost(API_KEY)
    client.transmissions.base_uri = f"http://127.0.0.1:{port}/api/v1"  # the SDK forces https
    return client


async def test_official_sparkpost_sdk_is_accepted(emulator: Emulator) -> None:
    client = sparkpost_client(emulator.port)
    data = base64.b64encode(PDF).decode()
    answer = await asyncio.to_thread(
        client.transmissions.send,
        recipients=["ana@example.org"],
        cc=["chen@example.com"],
        bcc=["audit@example.com"],
        from_email="Zoë Shop <noreply@example.com>",
        subject="From the SDK",
        text="hello",
        html="<p>hello</p>",
        reply_to="help@example.com",
        custom_headers={"X-Order": "7"},
        attachments=[{"type": "application/pdf", "name": "r.pdf", "data": data}],
        inline_images=[{"type": "image/png", "name": "logo", "data": data}],
        metadata={"order": "7"},
        campaign="spring",
        track_opens=False,
    )

    (stored,) = emulator.messages
    assert answer == {
        "total_rejected_recipients": 0,
        "total_accepted_recipients": 3,
        "id": stored.id,
    }
    assert stored.headers["user-agent"].startswith("python-sparkpost/")
    body = stored.body
    assert [r["address"] for r in body["recipients"]] == [
        {"email": "ana@example.org"},
        {"email": "chen@example.com", "header_to": "ana@example.org"},
        {"email": "audit@example.com", "header_to": "ana@example.org"},
    ]
    assert body["content"]["from"] == {"email": "noreply@example.com", "name": "Zoë Shop"}
    assert body["content"]["headers"] == {"X-Order": "7", "CC": "chen@example.com"}
    assert body["content"]["attachments"] == [
        {"type": "application/pdf", "name": "r.pdf", "data": data}
    ]
    assert body["content"]["inline_images"][0]["name"] == "logo"
    assert (body["campaign_id"], body["metadata"]) == ("spring", {"order": "7"})
    assert body["options"] == {"open_tracking": False}


async def test_the_sdk_reads_an_injected_plan_limit_as_sparkpost_s_error(
    emulator: Emulator,
) -> None:
    client = sparkpost_client(emulator.port)
    exceptions = pytest.importorskip("sparkpost.exceptions")
    emulator.set_faults(Faults(status=420))
    with pytest.raises(exceptions.SparkPostAPIException) as raised:
        await asyncio.to_thread(
            client.transmissions.send,
            recipients=["ana@example.org"],
            from_email="noreply@example.com",
            subject="s",
            text="t",
        )
    assert raised.value.status == 420
    assert "Code: 2101" in raised.value.errors[0]
    assert emulator.messages == []


# -- faults ------------------------------------------------------------------------------


async def test_injected_503_is_retriable_in_sparkpost_words(
    emulator: Emulator, vendor: SparkPostVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 503})
    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert result.reason == ("Message generation module not available: emulated fault (code 1900)")
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("status", "words"), [(429, "rate limited: Too many requests"), (420, "(quota)")]
)
async def test_injected_429_and_420_are_rate_limited_with_retry_after(
    emulator: Emulator,
    vendor: SparkPostVendor,
    http: aiohttp.ClientSession,
    status: int,
    words: str,
) -> None:
    await set_faults(http, emulator.port, {"status": status, "retry_after": 7})
    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status, result.retry_after) == (
        Outcome.RATE_LIMITED,
        status,
        7.0,
    )
    assert words in result.reason
    assert "emulated fault" in result.reason
