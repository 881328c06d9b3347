"""The SES v2 emulator shape over real sockets: mailmux's adapter, boto3, refusals, faults."""

from __future__ import annotations

import asyncio
import base64
import email.utils
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
import orjson
import pytest
from emulator_kit import (
    TIMEOUT,
    emulator_fixture,
    http_fixture,
    post_to,
    read_back,
    set_faults,
    vendor_fixture,
)
from vendor_kit import MESSAGE_ID, PDF, PNG, no_aws_environment

from mailmux.emulator import Emulator
from mailmux.message import Address, Attachment, Message
from mailmux.mime import parse_mime
from mailmux.vendors.base import HttpResponse, Outcome
from mailmux.vendors.ses import SesVendor

KEY_ID = "AKIAEMULATORTEST"
SECRET = "emulator-secret"

emulator = emulator_fixture("ses", seed=7)
vendor = vendor_fixture(
    SesVendor, "aws", region="us-east-1", access_key_id=KEY_ID, secret_access_key=SECRET
)
http = http_fixture()


def message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "sender": Address("noreply@example.com", "Zoë Shop"),
        "to": (Address("ana@example.org", "Ana María"), Address("bo@example.net")),
        "cc": (Address("chen@example.com", "陈伟"),),
        "bcc": (Address("audit@example.com"),),
        "reply_to": (Address("help@example.com", "Help, Desk"),),
        "subject": "Receipt №7 ✓",
        "text": "Thanks.\n",
        "html": '<p>Thanks. <img src="cid:logo@x"></p>\n',
        "headers": {"X-Order": "7", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": (
            Attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@x"),
            Attachment("reçu.pdf", PDF, "application/pdf"),
        ),
        "tags": ("receipt",),
        "metadata": {"order": "7"},
    }
    fields.update(changes)
    return Message(**fields)


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the vendor nor boto3 may pick up endpoints or keys from this machine."""
    no_aws_environment(monkeypatch, tmp_path)


async def post(
    http: aiohttp.ClientSession, port: int, body: Any, headers: dict[str, str]
) -> HttpResponse:
    """A hand-made SendEmail request, answered as the adapter's transport would see it."""
    return await post_to(http, port, "/v2/email/outbound-emails", body, headers)


def mailbox(text: str) -> Address:
    """`Name <addr>` with an RFC 2047 name, decoded back to an Address."""
    name, addr = email.utils.parseaddr(text)
    return Address(addr, str(make_header(decode_header(name))) if name else None)


SIGNED = {
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=AKIAHANDMADE/20270115/us-east-1/ses/aws4_request,"
        " SignedHeaders=content-type;host;x-amz-date, Signature=0123abcd"
    ),
    "X-Amz-Date": "20270115T080000Z",
    "Content-Type": "application/json",
}
SIMPLE: dict[str, Any] = {
    "FromEmailAddress": "a@example.com",
    "Destination": {"ToAddresses": ["b@example.com"]},
    "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
}


# -- mailmux's adapter → emulator ----------------------------------------------------------


async def test_simple_round_trip_reads_back_field_by_field(
    emulator: Emulator, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    sent = message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (record,) = await read_back(http, emulator.port)
    assert record["id"] == result.vendor_message_id
    body = record["body"]
    assert mailbox(body["FromEmailAddress"]) == sent.sender
    destination = body["Destination"]
    assert [mailbox(a) for a in destination["ToAddresses"]] == list(sent.to)
    assert [mailbox(a) for a in destination["CcAddresses"]] == list(sent.cc)
    assert [mailbox(a) for a in destination["BccAddresses"]] == list(sent.bcc)
    assert [mailbox(a) for a in body["ReplyToAddresses"]] == list(sent.reply_to)
    simple = body["Content"]["Simple"]
    assert simple["Subject"]["Data"] == sent.subject
    assert simple["Body"]["Text"]["Data"] == sent.text
    assert simple["Body"]["Html"]["Data"] == sent.html
    assert {h["Name"]: h["Value"] for h in simple["Headers"]} == sent.headers
    attachments = tuple(
        Attachment(
            a["FileName"],
            base64.b64decode(a["RawContent"]),
            a["ContentType"],
            inline=a["ContentDisposition"] == "INLINE",
            content_id=a.get("ContentId"),
        )
        for a in simple["Attachments"]
    )
    assert attachments == sent.attachments
    tags = {t["Name"]: t["Value"] for t in body["EmailTags"]}
    assert tags == {**sent.metadata, **dict.fromkeys(sent.tags, "true")}
    assert record["headers"]["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential=…TEST/{record['headers']['x-amz-date'][:8]}"
        "/us-east-1/ses/aws4_request"
    )
    assert record["headers"]["content-type"] == "application/json"


async def test_a_bcc_only_message_arrives_with_bcc_only_in_the_destination(
    emulator: Emulator, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = message(to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (record,) = await read_back(http, emulator.port)
    body = record["body"]
    assert body["Destination"] == {
        "BccAddresses": ["audit@example.com", "Boss <boss@example.com>"]
    }  # SES writes no Bcc header: BccAddresses are the envelope only
    shown = orjson.dumps({k: v for k, v in body.items() if k != "Destination"})
    assert b"audit@" not in shown and b"boss@" not in shown


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": {"X-Note": "naïve café"}},
        {
            "raw_mime": (
                "From: Zoë Shop <noreply@example.com>\r\nTo: ana@example.org\r\n"
                "Subject: Raw ✓\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\nhello\r\n"
            ).encode()
        },
    ],
    ids=["forced-raw", "raw-mime"],
)
async def test_raw_round_trip_reads_back_the_same_message(
    emulator: Emulator, vendor: SesVendor, http: aiohttp.ClientSession, changes: dict[str, Any]
) -> None:
    sent = message(**changes)
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    (record,) = await read_back(http, emulator.port)
    assert record["id"] == result.vendor_message_id
    body = record["body"]
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert body["FromEmailAddress"] == sent.sender.email
    assert body["Destination"] == {
        "ToAddresses": [a.email for a in sent.to],
        "CcAddresses": [a.email for a in sent.cc],
        "BccAddresses": [a.email for a in sent.bcc],
    }
    assert {t["Name"]: t["Value"] for t in body["EmailTags"]} == {"order": "7", "receipt": "true"}
    if sent.raw_mime is not None:
        assert raw == sent.raw_mime
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


# -- boto3 → emulator ----------------------------------------------------------------------


def boto3_client(port: int) -> Any:
    return boto3.client(
        "sesv2",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )


async def test_boto3_sends_simple_content(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    client = boto3_client(emulator.port)
    answer = await asyncio.to_thread(
        client.send_email,
        FromEmailAddress="Shop <shop@example.com>",
        Destination={"ToAddresses": ["ana@example.org"], "BccAddresses": ["b@example.org"]},
        ReplyToAddresses=["help@example.com"],
        Content={
            "Simple": {
                "Subject": {"Data": "Hello ✓", "Charset": "UTF-8"},
                "Body": {"Text": {"Data": "Hi."}, "Html": {"Data": "<p>Hi.</p>"}},
                "Headers": [{"Name": "X-Order", "Value": "9"}],
                "Attachments": [
                    {"RawContent": PDF, "FileName": "r.pdf", "ContentType": "application/pdf"}
                ],
            }
        },
        EmailTags=[{"Name": "campaign", "Value": "spring"}],
    )
    client.close()

    (record,) = await read_back(http, emulator.port)
    assert answer["MessageId"] == record["id"]
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    body = record["body"]
    assert body["FromEmailAddress"] == "Shop <shop@example.com>"
    assert body["Destination"] == {
        "ToAddresses": ["ana@example.org"],
        "BccAddresses": ["b@example.org"],
    }
    assert body["Content"]["Simple"]["Subject"] == {"Data": "Hello ✓", "Charset": "UTF-8"}
    (attachment,) = body["Content"]["Simple"]["Attachments"]
    assert base64.b64decode(attachment["RawContent"]) == PDF
    assert body["EmailTags"] == [{"Name": "campaign", "Value": "spring"}]
    assert "/us-east-1/ses/aws4_request" in record["headers"]["authorization"]
    assert record["headers"]["user-agent"].startswith("Boto3/")


async def test_boto3_sends_raw_content(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    raw = b"From: shop@example.com\r\nTo: ana@example.org\r\nSubject: raw\r\n\r\nbody\r\n"
    client = boto3_client(emulator.port)
    answer = await asyncio.to_thread(client.send_email, Content={"Raw": {"Data": raw}})
    client.close()

    (record,) = await read_back(http, emulator.port)
    assert answer["MessageId"] == record["id"]
    assert base64.b64decode(record["body"]["Content"]["Raw"]["Data"]) == raw


# -- what the emulator refuses, as SES would -------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({}, "MissingAuthenticationTokenException"),
        ({"Authorization": "Bearer abc"}, "IncompleteSignatureException"),
        (
            {"Authorization": SIGNED["Authorization"].replace("/ses/", "/sesv2/")},
            "InvalidSignatureException",
        ),
        (
            {"Authorization": SIGNED["Authorization"].replace("/aws4_request", "")},
            "IncompleteSignatureException",
        ),
        ({"Authorization": SIGNED["Authorization"]}, "IncompleteSignatureException"),  # no date
    ],
    ids=["missing", "not-sigv4", "wrong-service", "bad-scope", "no-date"],
)
async def test_requests_not_signed_for_ses_are_403_and_vendor_config(
    emulator: Emulator,
    vendor: SesVendor,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    kind: str,
) -> None:
    response = await post(http, emulator.port, SIMPLE, headers)

    assert response.status == 403
    assert response.headers["x-amzn-errortype"] == kind
    assert orjson.loads(response.body)["__type"] == kind
    assert vendor.parse_response(response).outcome is Outcome.VENDOR_CONFIG
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"{not json", "BadRequestException", "not valid JSON"),
        ([1], "BadRequestException", "JSON object"),
        ({**SIMPLE, "Content": {}}, "BadRequestException", "exactly one of"),
        (
            {**SIMPLE, "Content": {**SIMPLE["Content"], "Raw": {"Data": "aGk="}}},
            "BadRequestException",
            "exactly one of",
        ),
        (
            {k: v for k, v in SIMPLE.items() if k != "FromEmailAddress"},
            "BadRequestException",
            "FromEmailAddress",
        ),
        ({**SIMPLE, "Destination": {}}, "BadRequestException", "at least one recipient"),
        ({**SIMPLE, "Destination": ["b@example.com"]}, "BadRequestException", "an object"),
        (
            {**SIMPLE, "Destination": {"ToAddresses": [f"r{i}@example.com" for i in range(51)]}},
            "MessageRejected",
            "exceeds 50",
        ),
        (
            {**SIMPLE, "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {}}}},
            "BadRequestException",
            "Text or Html",
        ),
        (
            {**SIMPLE, "Content": {"Simple": {"Body": {"Text": {"Data": "t"}}}}},
            "BadRequestException",
            "Subject.Data",
        ),
        ({**SIMPLE, "Content": {"Raw": {"Data": "not base64!"}}}, "BadRequestException", "base64"),
        (
            {**SIMPLE, "EmailTags": [{"Name": "a b", "Value": "c"}]},
            "BadRequestException",
            "Invalid tag",
        ),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-content",
        "two-contents",
        "no-sender",
        "no-recipient",
        "destination-list",
        "51-recipients",
        "no-body",
        "no-subject",
        "bad-base64",
        "bad-tag",
    ],
)
async def test_bodies_ses_would_refuse_are_400_and_permanent(
    emulator: Emulator,
    vendor: SesVendor,
    http: aiohttp.ClientSession,
    body: Any,
    kind: str,
    words: str,
) -> None:
    response = await post(http, emulator.port, body, SIGNED)

    assert response.status == 400
    assert response.headers["x-amzn-errortype"] == kind
    assert words in orjson.loads(response.body)["message"]
    assert vendor.parse_response(response).outcome is Outcome.PERMANENT
    assert emulator.messages == []


async def test_raw_content_needs_no_sender_or_recipients(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = base64.b64encode(b"From: a@example.com\r\nTo: b@example.com\r\n\r\nhi\r\n").decode()
    response = await post(http, emulator.port, {"Content": {"Raw": {"Data": data}}}, SIGNED)
    assert response.status == 200
    assert orjson.loads(response.body) == {"MessageId": emulator.messages[0].id}


# -- faults -----------------------------------------------------------------------------------


async def test_injected_503_is_retriable_with_an_ses_body(
    emulator: Emulator, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 503})
    response = await post(http, emulator.port, SIMPLE, SIGNED)
    assert orjson.loads(response.body) == {
        "__type": "ServiceUnavailable",
        "message": "Service Unavailable (emulated fault)",
    }
    assert response.headers["x-amzn-errortype"] == "ServiceUnavailable"

    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert result.reason == "ServiceUnavailable: Service Unavailable (emulated fault)"
    assert emulator.messages == []


async def test_injected_429_is_rate_limited_with_its_retry_after(
    emulator: Emulator, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 429, "retry_after": 3})
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 3.0)
    assert result.reason.startswith("rate limited: TooManyRequestsException")
    assert emulator.messages == []


async def test_an_injected_status_ses_never_sends_is_retriable(
    emulator: Emulator, vendor: SesVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 409})
    result = await vendor.send(message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 409)
    assert result.reason == "unexpected answer: ConflictException: Conflict (emulated fault)"
