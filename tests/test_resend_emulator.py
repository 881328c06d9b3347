"""The Resend emulator shape over real sockets: round trip, idempotency keys, Resend's
checks, the official SDK, and faults."""

from __future__ import annotations

import asyncio
import base64
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import Any

import aiohttp
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
from mailmux.message import Address, Attachment
from mailmux.vendors.base import Outcome
from mailmux.vendors.resend import ResendVendor
from mailmux.vendors.resend import emulated as resend_shape

API_KEY = "re_emulator_test_key"

emulator = emulator_fixture("resend")
vendor = vendor_fixture(ResendVendor, "backup", api_key=API_KEY)
http = http_fixture()


def mailbox(text: str) -> Address:
    """A Resend address string decoded back to the Address mailmux sent."""
    name, addr = parseaddr(text)
    return Address(addr, str(make_header(decode_header(name))) or None)


async def post(
    http: aiohttp.ClientSession, port: int, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    answer = await post_to(http, port, "/emails", body, headers)
    return answer.status, json_reply(answer)


BEARER = {"Authorization": f"Bearer {API_KEY}"}
VALID = {"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t"}


# -- round trip -----------------------------------------------------------------------


async def test_a_rich_message_arrives_field_by_field(
    emulator: Emulator, vendor: ResendVendor, http: aiohttp.ClientSession
) -> None:
    sent = numbered_message()
    result = await vendor.send(sent, TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 200)
    (stored,) = await read_back(http, emulator.port)
    assert stored["id"] == result.vendor_message_id
    assert stored["headers"]["authorization"] == "Bearer …_key"
    assert stored["headers"]["user-agent"].startswith("mailmux/")
    body = stored["body"]
    assert mailbox(body["from"]) == sent.sender
    for field in ("to", "cc", "bcc", "reply_to"):
        assert [mailbox(a) for a in body[field]] == list(getattr(sent, field)), field
    assert (body["subject"], body["text"], body["html"]) == (sent.subject, sent.text, sent.html)
    assert body["headers"] == sent.headers
    received = [
        Attachment(
            a["filename"],
            base64.b64decode(a["content"]),
            a["content_type"],
            inline="content_id" in a,
            content_id=a.get("content_id"),
        )
        for a in body["attachments"]
    ]
    assert received == list(sent.attachments)
    tags = {t["name"]: t["value"] for t in body["tags"]}
    assert tags == {"receipt": "true", "eu": "true", **sent.metadata}


async def test_a_retry_of_one_message_is_sent_once_by_resend(
    emulator: Emulator, vendor: ResendVendor
) -> None:
    """The key is mailmux's message id: a retry after an ambiguous attempt is deduplicated."""
    first = await vendor.send(numbered_message(1), TIMEOUT, MESSAGE_ID)
    again = await vendor.send(numbered_message(1), TIMEOUT, MESSAGE_ID)

    assert first.outcome is again.outcome is Outcome.ACCEPTED
    assert again.vendor_message_id == first.vendor_message_id
    (stored,) = emulator.messages
    assert stored.id == first.vendor_message_id
    assert stored.headers["idempotency-key"] == MESSAGE_ID

    # Another message, even under the caller's same Idempotency-Key, is another email.
    other_id = "018f3a2b4c5d6e7f8091a2b3c4d6"
    other = await vendor.send(numbered_message(2, idempotency_key="k"), TIMEOUT, other_id)
    assert other.vendor_message_id not in (None, first.vendor_message_id)
    assert len(emulator.messages) == 2

    # One message whose body changed between attempts: the first may have been sent.
    changed = await vendor.send(numbered_message(3), TIMEOUT, MESSAGE_ID)
    assert (changed.outcome, changed.status) == (Outcome.AMBIGUOUS, 409)
    assert changed.reason.startswith("invalid_idempotent_request: ")
    assert len(emulator.messages) == 2


async def test_a_message_without_to_is_unsupported_and_never_reaches_resend(
    emulator: Emulator, vendor: ResendVendor
) -> None:
    result = await vendor.send(numbered_message(to=(), cc=()), TIMEOUT, MESSAGE_ID)
    assert result.outcome is Outcome.UNSUPPORTED
    assert result.reason.startswith("no To recipient")
    assert emulator.messages == []


async def test_the_same_body_in_another_key_order_is_the_same_request(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": "k1"}
    status, first = await post(http, emulator.port, VALID, headers)
    reordered = dict(reversed(VALID.items()))
    status_again, again = await post(http, emulator.port, reordered, headers)
    assert (status, status_again) == (200, 200)
    assert first == again
    assert len(emulator.messages) == 1


async def test_the_oldest_idempotency_keys_are_forgotten_beyond_the_bound(
    monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    monkeypatch.setattr(resend_shape, "MAX_IDEMPOTENCY_KEYS", 2)
    server = Emulator("resend")
    await server.start()
    try:
        for key in ("k1", "k2", "k3"):
            status, _ = await post(http, server.port, VALID, {**BEARER, "Idempotency-Key": key})
            assert status == 200
        other = {**VALID, "subject": "another"}
        kept = await post(http, server.port, other, {**BEARER, "Idempotency-Key": "k2"})
        assert (kept[0], kept[1]["name"]) == (409, "invalid_idempotent_request")
        forgotten = await post(http, server.port, other, {**BEARER, "Idempotency-Key": "k1"})
        assert forgotten[0] == 200
        assert len(server.messages) == 4
    finally:
        await server.stop()


# -- Resend's own checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "name"),
    [
        ({}, 401, "missing_api_key"),
        ({"Authorization": "Bearer "}, 403, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, 403, "invalid_api_key"),
        ({**BEARER, "User-Agent": ""}, 403, "validation_error"),
        ({**BEARER, "Idempotency-Key": "k" * 257}, 400, "invalid_idempotency_key"),
    ],
)
async def test_auth_user_agent_and_key_checks_answer_in_resend_shape(
    emulator: Emulator, http: aiohttp.ClientSession, headers: dict[str, str], status: int, name: str
) -> None:
    answer = await post(http, emulator.port, VALID, headers)
    assert answer[0] == status
    assert answer[1]["statusCode"] == status
    assert answer[1]["name"] == name
    assert emulator.messages == []


@pytest.mark.parametrize(
    ("change", "name", "words"),
    [
        ({"from": None}, "missing_required_field", "Missing `from` field."),
        ({"subject": None}, "missing_required_field", "Missing `subject` field."),
        ({"to": []}, "validation_error", "Invalid `to` field."),
        ({"to": None, "bcc": ["c@example.com"]}, "missing_required_field", "Missing `to`"),
        ({"to": [f"r{i}@example.com" for i in range(51)]}, "validation_error", "at most 50"),
        ({"cc": [1]}, "validation_error", "Invalid `cc` field."),
        ({"text": None}, "validation_error", "Missing `html` or `text` field."),
        ({"headers": {"X-N": 1}}, "validation_error", "Header values must be strings."),
        ({"tags": [{"name": "a b"}]}, "validation_error", "Tags should only contain"),
        ({"tags": [{"name": "ok", "value": "no!"}]}, "validation_error", "Tags should only"),
        ({"attachments": [{"filename": "a.txt"}]}, "invalid_attachment", "content or path"),
        ({"attachments": [{"content": "@@", "filename": "a"}]}, "invalid_attachment", "base64"),
        ({"attachments": [{"content": [256], "filename": "a"}]}, "invalid_attachment", "bytes"),
    ],
)
async def test_invalid_bodies_are_422_with_resend_s_error_name(
    emulator: Emulator, http: aiohttp.ClientSession, change: dict[str, Any], name: str, words: str
) -> None:
    body = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    status, answer = await post(http, emulator.port, body, BEARER)
    assert (status, answer["name"]) == (422, name)
    assert words in answer["message"]
    assert emulator.messages == []


async def test_a_template_path_attachments_and_byte_lists_are_accepted(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {
        **{k: v for k, v in VALID.items() if k != "text"},
        "template": {"id": "welcome", "variables": {"n": 1}},
        "attachments": [
            {"path": "https://example.com/a.pdf"},
            {"content": list(PDF), "filename": "r.pdf"},
        ],
        "tags": [{"name": "only_name"}],
    }
    status, answer = await post(http, emulator.port, body, BEARER)
    assert status == 200
    assert answer == {"id": emulator.messages[0].id}
    status, _ = await post(http, emulator.port, b"{nope", BEARER)
    assert status == 400


# -- the official SDK ------------------------------------------------------------------


@pytest.fixture
def resend_sdk(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The resend module pointed at the emulator; its module-global settings are restored."""
    resend = pytest.importorskip("resend", reason="the resend SDK is not installed")
    monkeypatch.setattr(resend, "api_url", f"http://127.0.0.1:{emulator.port}")
    monkeypatch.setattr(resend, "api_key", API_KEY)
    return resend


async def test_official_resend_sdk_is_accepted(emulator: Emulator, resend_sdk: Any) -> None:
    params = {
        "from": "Zoë Shop <noreply@example.com>",
        "to": ["ana@example.org"],
        "cc": "chen@example.com",
        "subject": "From the SDK",
        "html": '<p>hello <img src="cid:logo"></p>',
        "headers": {"X-Order": "7"},
        "attachments": [
            {"filename": "r.pdf", "content": list(PDF)},
            {"filename": "logo.png", "content": list(PNG), "content_id": "logo"},
        ],
        "tags": [{"name": "category", "value": "receipt"}],
    }
    answer = await asyncio.to_thread(resend_sdk.Emails.send, params, {"idempotency_key": "sdk-1"})
    again = await asyncio.to_thread(resend_sdk.Emails.send, params, {"idempotency_key": "sdk-1"})

    (stored,) = emulator.messages
    assert answer["id"] == again["id"] == stored.id
    assert stored.headers["user-agent"].startswith("resend-python:")
    assert stored.headers["idempotency-key"] == "sdk-1"
    assert stored.body == params
    assert bytes(stored.body["attachments"][0]["content"]) == PDF


async def test_the_sdk_reads_injected_faults_as_resend_s_errors(
    emulator: Emulator, resend_sdk: Any
) -> None:
    params = {"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t"}
    emulator.set_faults(Faults(status=429, retry_after=3))
    with pytest.raises(resend_sdk.exceptions.RateLimitError) as limited:
        await asyncio.to_thread(resend_sdk.Emails.send, params)
    assert (limited.value.code, limited.value.error_type) == (429, "rate_limit_exceeded")
    assert limited.value.headers["retry-after"] == "3"

    emulator.set_faults(Faults())
    with pytest.raises(resend_sdk.exceptions.ResendError) as refused:
        await asyncio.to_thread(resend_sdk.Emails.send, {**params, "to": []})
    assert (refused.value.code, refused.value.error_type) == (422, "validation_error")
    assert emulator.messages == []


# -- faults ------------------------------------------------------------------------------


async def test_injected_503_is_retriable_in_resend_words(
    emulator: Emulator, vendor: ResendVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 503})
    result = await vendor.send(numbered_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status) == (Outcome.RETRIABLE, 503)
    assert result.reason == "application_error: Emulated fault."
    assert emulator.messages == []


async def test_injected_429_is_rate_limited_with_retry_after(
    emulator: Emulator, vendor: ResendVendor, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, emulator.port, {"status": 429, "retry_after": 7})
    result = await vendor.send(numbered_message(), TIMEOUT, MESSAGE_ID)

    assert (result.outcome, result.status, result.retry_after) == (
        Outcome.RATE_LIMITED,
        429,
        7.0,
    )
    assert result.reason == "rate limited: rate_limit_exceeded: Emulated fault."


async def test_an_injected_409_is_an_idempotent_request_still_in_flight(
    emulator: Emulator, vendor: ResendVendor
) -> None:
    emulator.set_faults(Faults(status=409))
    result = await vendor.send(numbered_message(), TIMEOUT, MESSAGE_ID)
    assert (result.outcome, result.status) == (Outcome.AMBIGUOUS, 409)
    assert result.reason.startswith("concurrent_idempotent_requests")
