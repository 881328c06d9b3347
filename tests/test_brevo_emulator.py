"""The Brevo emulator shape over real sockets: round trip, official SDK, Brevo's checks, faults.

Faults are driven through mailmux's adapter, not the SDK: brevo-python retries 408, 409,
429 and 5xx by itself, which would hide what the emulator answered."""

from __future__ import annotations

import asyncio
import base64
import email.header
import json
from functools import partial
from typing import Any

import aiohttp
import orjson
import pytest
import vendor_kit
from emulator_kit import TIMEOUT, emulator_fixture, http_fixture, post_to, read_back, vendor_fixture
from vendor_kit import MESSAGE_ID, PDF

from mailmux.emulator import Emulator, Faults
from mailmux.message import Address, Attachment
from mailmux.vendors.base import HttpResponse, Outcome
from mailmux.vendors.brevo import BrevoVendor

API_KEY = "xkeysib-emulator-test-key"
#: Brevo's idempotency key for MESSAGE_ID (the UUIDv5 of the message id).
KEY_UUID = "f3481e7d-e388-505f-86b8-366330d9c274"

emulator = emulator_fixture("brevo", seed=7)
vendor = vendor_fixture(BrevoVendor, "backup", api_key=API_KEY)
http = http_fixture()
#: Everything Brevo can carry (no inline image), with a sender name Brevo would drop
#: unless it is encoded.
rich_message = partial(
    vendor_kit.rich_message,
    sender=Address("noreply@example.com", "Müller, Jürgen"),
    html="<p>Thanks!</p>",
    attachments=(Attachment("reçu.pdf", PDF, "application/pdf"),),
    tags=("receipt", "spring"),
    metadata={"order_id": "42", "customer": "Zoë"},
)


async def post(
    http: aiohttp.ClientSession, port: int, body: Any, headers: dict[str, str] | None = None
) -> tuple[HttpResponse, Any]:
    """Send a raw request; the answer both decoded and as the adapter would see it."""
    sent_headers = {"api-key": API_KEY} if headers is None else headers
    seen = await post_to(http, port, "/v3/smtp/email", body, sent_headers)
    return seen, orjson.loads(seen.body)


def contact(item: dict[str, str]) -> Address:
    """Undo the RFC 2047 encoding the adapter applies to some names."""
    name = item.get("name")
    if name is not None:
        name = str(email.header.make_header(email.header.decode_header(name)))
    return Address(item["email"], name)


def valid_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sender": {"email": "a@example.com"},
        "to": [{"email": "b@example.com"}],
        "subject": "Hi",
        "textContent": "x",
    }
    body.update(changes)
    return body


# -- mailmux → emulator → read back ------------------------------------------------


async def test_round_trip_reads_back_every_field_that_was_sent(
    emulator: Emulator, vendor: BrevoVendor, http: aiohttp.ClientSession
) -> None:
    sent = rich_message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 201)
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == f"<{stored['id']}@emulator.brevo.invalid>"
    body = stored["body"]
    assert contact(body["sender"]) == sent.sender
    assert tuple(map(contact, body["to"])) == sent.to
    assert tuple(map(contact, body["cc"])) == sent.cc
    assert tuple(map(contact, body["bcc"])) == sent.bcc
    assert (contact(body["replyTo"]),) == sent.reply_to
    assert body["subject"] == sent.subject
    assert (body["textContent"], body["htmlContent"]) == (sent.text, sent.html)
    headers = dict(body["headers"])
    assert json.loads(headers.pop("X-Mailin-custom")) == sent.metadata
    assert headers.pop("idempotencyKey") == KEY_UUID
    assert headers == sent.headers
    assert tuple((a["name"], base64.b64decode(a["content"])) for a in body["attachment"]) == tuple(
        (a.filename, a.content) for a in sent.attachments
    )
    assert tuple(body["tags"]) == sent.tags
    assert stored["headers"]["api-key"] == f"…{API_KEY[-4:]}"


async def test_a_bcc_only_message_arrives_as_versions_that_name_only_their_own_recipient(
    emulator: Emulator, vendor: BrevoVendor, http: aiohttp.ClientSession
) -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    sent = rich_message(to=(), cc=(), bcc=hidden)

    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 201)
    (stored,) = await read_back(http, emulator.port)
    assert result.vendor_message_id == f"<{stored['id']}.0@emulator.brevo.invalid>"
    body = stored["body"]
    assert body["messageVersions"] == [
        {"to": [{"email": "audit@example.com"}]},
        {"to": [{"email": "boss@example.com", "name": "Boss"}]},
    ]
    shared = {k: v for k, v in body.items() if k != "messageVersions"}
    assert not {"to", "cc", "bcc"} & shared.keys()
    assert b"audit@" not in orjson.dumps(shared) and b"boss@" not in orjson.dumps(shared)
    assert body["headers"]["idempotencyKey"] == KEY_UUID  # one key for the whole batch


async def test_versions_and_scheduling_change_the_answer_like_brevo(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    versions = [{"to": [{"email": "b@example.com"}]}, {"to": [{"email": "c@example.com"}]}]
    seen, answer = await post(http, emulator.port, valid_body(to=None, messageVersions=versions))
    first = emulator.messages[0].id
    assert (seen.status, answer) == (
        201,
        {
            "messageIds": [
                f"<{first}.0@emulator.brevo.invalid>",
                f"<{first}.1@emulator.brevo.invalid>",
            ]
        },
    )

    seen, answer = await post(http, emulator.port, valid_body(scheduledAt="2030-01-01T00:00:00Z"))
    assert (seen.status, list(answer)) == (202, ["messageId"])

    seen, answer = await post(http, emulator.port, valid_body())
    assert (seen.status, list(answer)) == (201, ["messageId"])


# -- Brevo's own checks -----------------------------------------------------------------


async def test_a_missing_key_is_401_in_brevo_shape(
    emulator: Emulator, vendor: BrevoVendor, http: aiohttp.ClientSession
) -> None:
    seen, answer = await post(http, emulator.port, valid_body(), headers={})
    # Brevo's own text when the api-key header is missing (brevo-python issue #13).
    assert (seen.status, answer) == (
        401,
        {"code": "unauthorized", "message": "authentication not found in headers"},
    )
    assert vendor.parse_response(seen).outcome is Outcome.VENDOR_CONFIG
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", "bad_request", "valid JSON"),
        ([1], "bad_request", "valid JSON"),
        (valid_body(sender=None), "missing_parameter", "sender"),
        (valid_body(sender={"name": "no address"}), "invalid_parameter", "sender"),
        (valid_body(to=None), "missing_parameter", "to is missing"),
        (
            valid_body(to=None, bcc=[{"email": "c@example.com"}]),
            "missing_parameter",
            "to is missing",
        ),
        (
            valid_body(to=None, messageVersions=[{"bcc": [{"email": "c@example.com"}]}]),
            "missing_parameter",
            "to is missing in messageVersions",
        ),
        (
            valid_body(to=None, messageVersions=[{"to": [{"email": "x"}]}]),
            "invalid_parameter",
            "in to in messageVersions",
        ),
        (valid_body(to=[{"email": "not-an-address"}]), "invalid_parameter", "in to"),
        # Brevo: {"code":"missing_parameter","message":"email is missing in to"}
        (valid_body(bcc=[{"name": "x"}]), "missing_parameter", "email is missing in bcc"),
        (valid_body(replyTo={"email": "x"}), "invalid_parameter", "in replyTo"),
        (valid_body(subject=""), "missing_parameter", "subject"),
        (valid_body(textContent=None), "missing_parameter", "htmlContent or textContent"),
        (valid_body(attachment=[{"content": "eA=="}]), "missing_parameter", "name"),
        (valid_body(attachment=[{"name": "a.txt"}]), "invalid_parameter", "url or a content"),
    ],
    ids=[
        "json",
        "not-object",
        "sender",
        "sender-email",
        "to",
        "bcc-only",
        "version-without-to",
        "version-to-email",
        "to-email",
        "bcc",
        "reply-to",
        "subject",
        "content",
        "attachment-name",
        "attachment-content",
    ],
)
async def test_invalid_requests_get_brevos_400(
    emulator: Emulator,
    vendor: BrevoVendor,
    http: aiohttp.ClientSession,
    body: Any,
    code: str,
    words: str,
) -> None:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not None}
    seen, answer = await post(http, emulator.port, body)

    assert (seen.status, answer["code"]) == (400, code)
    assert words in answer["message"]
    expected = Outcome.VENDOR_CONFIG if "sender" in words else Outcome.PERMANENT
    assert vendor.parse_response(seen).outcome is expected
    assert emulator.messages == []


async def test_a_template_stands_in_for_sender_subject_and_content(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    seen, _ = await post(http, emulator.port, {"to": [{"email": "b@example.com"}], "templateId": 3})
    assert seen.status == 201
    assert len(emulator.messages) == 1


# -- faults (driven with mailmux's adapter) -----------------------------------------------


async def test_injected_503_is_retriable(
    emulator: Emulator, vendor: BrevoVendor, http: aiohttp.ClientSession
) -> None:
    emulator.set_faults(Faults(status=503, retry_after=2))
    seen, answer = await post(http, emulator.port, valid_body())
    assert (seen.status, answer) == (503, {"message": "Service Unavailable (emulated fault)"})

    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status, result.retry_after) == (Outcome.RETRIABLE, 503, 2.0)
    assert emulator.messages == []


async def test_injected_429_carries_brevos_rate_limit_headers(
    emulator: Emulator, vendor: BrevoVendor, http: aiohttp.ClientSession
) -> None:
    emulator.set_faults(Faults(status=429, retry_after=7))
    seen, _ = await post(http, emulator.port, valid_body())
    assert "retry-after" not in seen.headers
    assert (seen.headers["x-sib-ratelimit-remaining"], seen.headers["x-sib-ratelimit-reset"]) == (
        "0",
        "7",
    )

    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


async def test_injected_402_is_quota(emulator: Emulator, vendor: BrevoVendor) -> None:
    emulator.set_faults(Faults(status=402))
    result = await vendor.send(rich_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.RATE_LIMITED, 402)
    assert result.reason.startswith("quota: not enough Brevo credit: not_enough_credits: ")


# -- the official SDK -------------------------------------------------------------------------


async def test_official_brevo_sdk_is_accepted(emulator: Emulator) -> None:
    brevo = pytest.importorskip("brevo", reason="brevo-python is not installed")
    emails = pytest.importorskip("brevo.transactional_emails")
    httpx = pytest.importorskip("httpx")

    def send() -> Any:
        with httpx.Client() as session:
            client = brevo.Brevo(
                api_key=API_KEY,
                base_url=f"http://127.0.0.1:{emulator.port}/v3",
                httpx_client=session,
            )
            return client.transactional_emails.send_transac_email(
                sender=emails.SendTransacEmailRequestSender(email="hello@example.com", name="Alex"),
                to=[emails.SendTransacEmailRequestToItem(email="jo@example.org", name="Jo")],
                subject="Hello from the SDK",
                html_content="<p>Hello</p>",
                tags=["sdk"],
                headers={"X-Mailin-custom": "sdk-run"},
            )

    response = await asyncio.to_thread(send)

    (stored,) = emulator.messages
    assert response.message_id == f"<{stored.id}@emulator.brevo.invalid>"
    assert stored.body == {
        "sender": {"email": "hello@example.com", "name": "Alex"},
        "to": [{"email": "jo@example.org", "name": "Jo"}],
        "subject": "Hello from the SDK",
        "htmlContent": "<p>Hello</p>",
        "tags": ["sdk"],
        "headers": {"X-Mailin-custom": "sdk-run"},
    }
    assert stored.headers["user-agent"].startswith("brevo-python/")


async def test_official_sdk_reads_brevos_400(emulator: Emulator) -> None:
    brevo = pytest.importorskip("brevo", reason="brevo-python is not installed")
    emails = pytest.importorskip("brevo.transactional_emails")
    errors = pytest.importorskip("brevo.errors")
    httpx = pytest.importorskip("httpx")

    def send() -> None:
        with httpx.Client() as session:
            client = brevo.Brevo(
                api_key=API_KEY,
                base_url=f"http://127.0.0.1:{emulator.port}/v3",
                httpx_client=session,
            )
            client.transactional_emails.send_transac_email(
                sender=emails.SendTransacEmailRequestSender(email="hello@example.com"),
                to=[emails.SendTransacEmailRequestToItem(email="jo@example.org")],
                html_content="<p>no subject</p>",
            )

    with pytest.raises(errors.BadRequestError) as raised:
        await asyncio.to_thread(send)
    assert raised.value.body == {"code": "missing_parameter", "message": "subject is missing"}
    assert emulator.messages == []
