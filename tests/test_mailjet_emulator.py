"""The Mailjet emulator shape over real sockets: round trip, official SDK, per-message errors,
faults."""

from __future__ import annotations

import asyncio
import base64
from functools import partial
from typing import Any

import aiohttp
import orjson
import pytest
import vendor_kit
from emulator_kit import (
    TIMEOUT,
    emulator_fixture,
    http_fixture,
    post_to,
    read_back,
    vendor_fixture,
)
from vendor_kit import MESSAGE_ID

from mailmux.emulator import Emulator, Faults
from mailmux.message import Address, Attachment
from mailmux.vendors.base import HttpResponse, Outcome
from mailmux.vendors.mailjet import MailjetVendor

KEY, SECRET = "mj-emulator-key", "mj-emulator-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}

emulator = emulator_fixture("mailjet", seed=7)
vendor = vendor_fixture(MailjetVendor, "backup", api_key=KEY, api_secret=SECRET)
http = http_fixture()
#: Mailjet takes one tag per message; its metadata carries a non-ASCII value.
rich_message = partial(
    vendor_kit.rich_message,
    tags=("receipt",),
    metadata={"order_id": "42", "customer": "Zoë"},
)


async def post(
    http: aiohttp.ClientSession, port: int, body: Any, headers: dict[str, str] | None = None
) -> tuple[HttpResponse, Any]:
    """Send a raw request; the answer both decoded and as the adapter would see it."""
    seen = await post_to(http, port, "/v3.1/send", body, AUTH if headers is None else headers)
    return seen, orjson.loads(seen.body)


def addresses(items: list[dict[str, str]]) -> tuple[Address, ...]:
    return tuple(Address(item["Email"], item.get("Name")) for item in items)


def attachments(entry: dict[str, Any]) -> tuple[Attachment, ...]:
    inline = tuple(
        Attachment(
            a["Filename"],
            base64.b64decode(a["Base64Content"]),
            a["ContentType"],
            True,
            a["ContentID"],
        )
        for a in entry.get("InlinedAttachments", [])
    )
    regular = tuple(
        Attachment(a["Filename"], base64.b64decode(a["Base64Content"]), a["ContentType"])
        for a in entry.get("Attachments", [])
    )
    return inline + regular


# -- mailmux → emulator → read back ------------------------------------------------


async def test_round_trip_reads_back_every_field_that_was_sent(
    emulator: Emulator, vendor: MailjetVendor, http: aiohttp.ClientSession
) -> None:
    sent = rich_message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == stored["id"]
    (entry,) = stored["body"]["Messages"]
    assert Address(entry["From"]["Email"], entry["From"]["Name"]) == sent.sender
    assert addresses(entry["To"]) == sent.to
    assert addresses(entry["Cc"]) == sent.cc
    assert addresses(entry["Bcc"]) == sent.bcc
    assert addresses([entry["ReplyTo"]]) == sent.reply_to
    assert entry["Subject"] == sent.subject
    assert (entry["TextPart"], entry["HTMLPart"]) == (sent.text, sent.html)
    assert entry["Headers"] == sent.headers
    assert attachments(entry) == sent.attachments
    assert (entry["CustomCampaign"],) == sent.tags
    assert orjson.loads(entry["EventPayload"]) == sent.metadata
    assert stored["headers"]["idempotency-key"] == MESSAGE_ID
    assert stored["headers"]["authorization"] == f"…{KEY[-4:]}"


async def test_each_recipient_gets_its_own_ids(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "Messages": [
            {
                "From": {"Email": "a@example.com"},
                "To": [{"Email": "b@example.com"}, {"Email": "c@example.com"}],
                "Bcc": [{"Email": "d@example.com"}],
                "CustomID": "order-7",
                "TextPart": "x",
            }
        ]
    }
    seen, answer = await post(http, emulator.port, body)

    assert seen.status == 200
    (entry,) = answer["Messages"]
    (stored,) = emulator.messages
    assert (entry["Status"], entry["CustomID"], entry["Cc"]) == ("success", "order-7", [])
    recipients = entry["To"] + entry["Bcc"]
    assert [r["Email"] for r in recipients] == ["b@example.com", "c@example.com", "d@example.com"]
    assert [r["MessageUUID"] for r in recipients] == [stored.id, f"{stored.id}-1", f"{stored.id}-2"]
    numbers = [r["MessageID"] for r in recipients]
    assert len(set(numbers)) == 3 and all(2**58 <= n < 2**63 for n in numbers)
    assert recipients[0]["MessageHref"].endswith(f"/v3/REST/message/{numbers[0]}")


async def test_a_bcc_only_message_arrives_as_copies_that_name_only_their_own_recipient(
    emulator: Emulator, vendor: MailjetVendor, http: aiohttp.ClientSession
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = rich_message(to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status, result.reason) == (Outcome.ACCEPTED, 200, "")
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == stored["id"]
    body = stored["body"]
    assert [addresses(m["To"]) for m in body["Messages"]] == [(hidden[0],), (hidden[1],)]
    assert all(m.keys() == {"To"} for m in body["Messages"])
    shared = body["Globals"]
    assert not {"To", "Cc", "Bcc"} & shared.keys()
    assert b"audit@" not in orjson.dumps(shared) and b"boss@" not in orjson.dumps(shared)
    assert (shared["Subject"], shared["TextPart"]) == (sent.subject, sent.text)
    assert attachments(shared) == sent.attachments


async def test_copies_mailjet_takes_are_sent_when_another_copy_is_refused(
    emulator: Emulator, vendor: MailjetVendor, http: aiohttp.ClientSession
) -> None:
    hidden = (Address("audit@localhost"), Address("boss@example.com"))  # Mailjet: mj-0013
    result = await vendor.send(rich_message(to=(), cc=(), bcc=hidden), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 400)
    assert result.reason.startswith("1 of 2 copies refused: mj-0013 (To[0].Email): ")
    (stored,) = await read_back(http, emulator.port)
    assert [m["To"] for m in stored["body"]["Messages"]] == [[{"Email": "boss@example.com"}]]


# -- Mailjet's own checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"key-only").decode(), "Basic !!", "Token abc"],
    ids=["missing", "no-secret", "not-base64", "other-scheme"],
)
async def test_missing_or_bad_credentials_get_a_global_401(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    vendor: MailjetVendor,
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    seen, answer = await post(http, emulator.port, {"Messages": []}, headers)

    assert (seen.status, answer["ErrorCode"], answer["StatusCode"]) == (401, "mj-0015", 401)
    assert vendor.parse_response(seen).outcome is Outcome.VENDOR_CONFIG
    assert emulator.messages == []


async def test_a_bearer_token_is_accepted(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    body = {
        "Messages": [
            {"From": {"Email": "a@example.com"}, "To": [{"Email": "b@x.io"}], "TextPart": "x"}
        ]
    }
    seen, _ = await post(http, emulator.port, body, {"Authorization": "Bearer token-123"})
    assert seen.status == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "mj-0002"),
        ({}, "mj-0003"),
        ({"Messages": []}, "mj-0007"),
        ({"Messages": {"From": "x"}}, "mj-0004"),
        ({"Messages": [{"TextPart": "x"}] * 51}, "mj-0008"),
    ],
    ids=["json", "missing", "empty", "type", "too-many"],
)
async def test_call_level_problems_get_a_global_400(
    emulator: Emulator, http: aiohttp.ClientSession, vendor: MailjetVendor, body: Any, code: str
) -> None:
    seen, answer = await post(http, emulator.port, body)

    assert (seen.status, answer["ErrorCode"]) == (400, code)
    assert "Messages" not in answer
    assert vendor.parse_response(seen).outcome is Outcome.PERMANENT
    assert emulator.messages == []


async def test_a_message_with_only_bcc_is_refused_for_want_of_to(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    message = {"From": {"Email": "a@example.com"}, "Bcc": [{"Email": "b@example.com"}]}
    seen, answer = await post(http, emulator.port, {"Messages": [{**message, "TextPart": "x"}]})

    assert seen.status == 400
    ((entry),) = answer["Messages"]
    assert [(e["ErrorCode"], e["ErrorRelatedTo"]) for e in entry["Errors"]] == [("mj-0003", ["To"])]
    assert emulator.messages == []


async def test_an_invalid_message_gets_per_message_errors_in_mailjets_shape(
    emulator: Emulator, http: aiohttp.ClientSession, vendor: MailjetVendor
) -> None:
    body = {
        "Messages": [
            {
                "To": [{"Email": "not-an-address"}],
                "Attachments": [{"Filename": "a.txt", "ContentType": "text/plain"}],
            }
        ]
    }
    seen, answer = await post(http, emulator.port, body)

    assert seen.status == 400
    ((entry),) = answer["Messages"]
    assert entry["Status"] == "error"
    assert [(e["ErrorCode"], e["StatusCode"], e["ErrorRelatedTo"]) for e in entry["Errors"]] == [
        ("mj-0003", 400, ["From"]),
        ("mj-0013", 400, ["To[0].Email"]),
        ("send-0003", 400, ["TextPart", "HTMLPart", "TemplateID"]),
        ("mj-0012", 400, ["Attachments[0].Base64Content"]),
    ]
    assert all(len(e["ErrorIdentifier"]) == 36 for e in entry["Errors"])
    result = vendor.parse_response(seen)
    assert result.outcome is Outcome.PERMANENT
    assert result.reason.startswith("mj-0003 (From): ")
    assert emulator.messages == []


async def test_globals_supply_from_and_content(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "Globals": {"From": {"Email": "a@example.com"}, "TextPart": "shared"},
        "Messages": [{"To": [{"Email": "b@example.com"}]}],
    }
    seen, _ = await post(http, emulator.port, body)
    assert seen.status == 200
    assert len(emulator.messages) == 1


async def test_valid_messages_are_still_sent_when_another_fails(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    good = {"From": {"Email": "a@example.com"}, "To": [{"Email": "b@example.com"}], "TextPart": "x"}
    bad = {**good, "To": [{"Email": "b@example.com"}] * 51}
    seen, answer = await post(http, emulator.port, {"Messages": [bad, good], "SandboxMode": False})

    assert seen.status == 400
    failed, sent = answer["Messages"]
    assert [e["ErrorCode"] for e in failed["Errors"]] == ["send-0015"]
    (stored,) = emulator.messages
    assert sent["Status"] == "success"
    assert sent["To"][0]["MessageUUID"] == stored.id
    assert stored.body == {"Messages": [good], "SandboxMode": False}


async def test_sandbox_mode_validates_without_storing(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "SandboxMode": True,
        "Messages": [{"From": {"Email": "a@x.io"}, "To": [{"Email": "b@x.io"}], "TextPart": "x"}],
    }
    seen, answer = await post(http, emulator.port, body)

    assert seen.status == 200
    (recipient,) = answer["Messages"][0]["To"]
    assert (recipient["MessageUUID"], recipient["MessageID"]) == ("", 0)
    assert emulator.messages == []


# -- faults -----------------------------------------------------------------------------------


async def test_injected_503_is_retriable_with_mailjets_global_error(
    emulator: Emulator, vendor: MailjetVendor, http: aiohttp.ClientSession
) -> None:
    emulator.set_faults(Faults(status=503))
    seen, answer = await post(http, emulator.port, {"Messages": []})
    assert (seen.status, answer["StatusCode"], answer["ErrorMessage"]) == (
        503,
        503,
        "Service Unavailable (emulated fault)",
    )

    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert "emulated fault" in result.reason
    assert emulator.messages == []


async def test_injected_429_is_rate_limited_with_its_retry_after(
    emulator: Emulator, vendor: MailjetVendor
) -> None:
    emulator.set_faults(Faults(status=429, retry_after=7))
    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


# -- the official SDK -------------------------------------------------------------------------


async def test_official_mailjet_sdk_is_accepted(emulator: Emulator) -> None:
    mailjet_rest = pytest.importorskip("mailjet_rest", reason="mailjet-rest is not installed")
    payload = {
        "Messages": [
            {
                "From": {"Email": "pilot@example.com", "Name": "Pilot"},
                "To": [{"Email": "passenger@example.org", "Name": "Passenger 1"}],
                "Subject": "Your flight plan",
                "TextPart": "Welcome aboard",
                "HTMLPart": "<h3>Welcome aboard</h3>",
                "CustomID": "flight-1",
            }
        ]
    }

    def send() -> Any:
        with mailjet_rest.Client(
            auth=(KEY, SECRET), version="v3.1", api_url=f"http://127.0.0.1:{emulator.port}/"
        ) as client:
            return client.send.create(data=payload)

    response = await asyncio.to_thread(send)

    assert response.status_code == 200
    (stored,) = emulator.messages
    assert stored.body == payload
    assert stored.headers["user-agent"].startswith("mailjet-apiv3-python/")
    assert len(stored.headers["idempotency-key"]) == 64  # the SDK's payload fingerprint
    (entry,) = response.json()["Messages"]
    assert (entry["Status"], entry["CustomID"]) == ("success", "flight-1")
    assert entry["To"][0]["MessageUUID"] == stored.id


async def test_official_sdk_reads_the_per_message_error(emulator: Emulator) -> None:
    mailjet_rest = pytest.importorskip("mailjet_rest", reason="mailjet-rest is not installed")
    payload = {"Messages": [{"To": [{"Email": "passenger@example.org"}], "TextPart": "x"}]}

    def send() -> None:
        with mailjet_rest.Client(
            auth=(KEY, SECRET), version="v3.1", api_url=f"http://127.0.0.1:{emulator.port}/"
        ) as client:
            client.send.create(data=payload)

    with pytest.raises(mailjet_rest.ValidationError, match="From is mandatory"):
        await asyncio.to_thread(send)
    assert emulator.messages == []
