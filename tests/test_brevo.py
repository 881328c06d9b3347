"""Brevo adapter: exact request bodies, Brevo's official schema, and the error table."""

from __future__ import annotations

import base64
import email.header
import email.utils
import json
import uuid
from functools import partial
from typing import Any

import orjson
import pytest
import vendor_kit
from vendor_kit import (
    MESSAGE_ID,
    NOW,
    PDF,
    PNG,
    FakeTransport,
    endpoint,
    json_of,
    json_schema,
    load_contract,
    minimal_message,
    validate,
    vendor_factory,
)

from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import AttemptResult, HttpResponse, Outcome
from mailmux.vendors.brevo import BrevoVendor

CONTRACT = load_contract("brevo.send.json")
SEND = endpoint(CONTRACT, "POST", "/smtp/email")
REQUEST_SCHEMA = json_schema(SEND["request"])
#: Brevo's idempotency key for MESSAGE_ID: the UUIDv5 of the message id (pinned here, so a
#: change to the derivation, which would let a retry across an upgrade be sent twice, shows).
KEY_UUID = "f3481e7d-e388-505f-86b8-366330d9c274"
ACCEPTED = HttpResponse(201, {}, b'{"messageId":"<1@relay>"}')

#: Everything Brevo can carry: no inline image (Brevo has no cid: support), and metadata
#: with a non-ASCII value.
rich_message = partial(
    vendor_kit.rich_message,
    html="<p>Thanks!</p>",
    attachments=(Attachment("reçu.pdf", PDF, "application/pdf"),),
    metadata={"order_id": "42", "customer": "Zoë"},
)


vendor = vendor_factory(
    BrevoVendor, "backup", ACCEPTED, api_key="xkeysib-test", base_url="https://api.brevo.example/"
)


def body_of(message: Message) -> dict[str, Any]:
    return json_of(vendor().build_request(message, MESSAGE_ID))


# -- Message → request ------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://api.brevo.example/v3/smtp/email"
    assert request.headers == {
        "api-key": "xkeysib-test",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    assert orjson.loads(request.body) == {
        "sender": {"email": "noreply@example.com", "name": "Zoë Ålander"},
        "to": [{"email": "ana@example.org", "name": "Ana María"}, {"email": "bo@example.net"}],
        "cc": [{"email": "chen@example.com", "name": "陈伟"}],
        "bcc": [{"email": "audit@example.com"}],
        "replyTo": {"email": "support@example.com", "name": "Support ✉"},
        "subject": "Your receipt — №42 ✓",
        "htmlContent": "<p>Thanks!</p>",
        "textContent": "Thanks for your order.\n",
        "attachment": [{"content": base64.b64encode(PDF).decode(), "name": "reçu.pdf"}],
        "headers": {
            "X-Campaign": "spring",
            "List-Unsubscribe": "<mailto:u@example.com>",
            "X-Mailin-custom": '{"order_id":"42","customer":"Zo\\u00eb"}',
            "idempotencyKey": KEY_UUID,
        },
        "tags": ["receipt", "spring"],
    }


def test_minimal_message_leaves_out_every_empty_field() -> None:
    assert body_of(minimal_message()) == {
        "sender": {"email": "a@example.com"},
        "to": [{"email": "b@example.com"}],
        "subject": "Hi",
        "textContent": "x",
        "headers": {"idempotencyKey": KEY_UUID},
    }


def test_a_bcc_only_message_is_one_version_per_recipient() -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    body = body_of(rich_message(to=(), cc=(), bcc=hidden))
    assert body["messageVersions"] == [
        {"to": [{"email": "audit@example.com"}]},
        {"to": [{"email": "boss@example.com", "name": "Boss"}]},
    ]
    assert not {"to", "cc", "bcc"} & body.keys()
    assert validate(REQUEST_SCHEMA, body) == []


@pytest.mark.parametrize("bcc", [(), (Address("audit@example.com"),)], ids=["cc", "cc+bcc"])
async def test_cc_without_to_is_unsupported_without_a_request(bcc: tuple[Address, ...]) -> None:
    transport = FakeTransport(ACCEPTED)
    message = rich_message(to=(), bcc=bcc)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)
    assert result.outcome is Outcome.UNSUPPORTED
    assert result.reason.startswith("cc without a To recipient: ")
    assert transport.calls == []


def test_metadata_header_is_seven_bit_and_decodes_back_exactly() -> None:
    metadata = {"note": 'quote " ✓', "customer": "Zoë"}
    value = body_of(rich_message(metadata=metadata))["headers"]["X-Mailin-custom"]
    assert value.isascii()
    assert json.loads(value) == metadata


def test_the_idempotency_key_is_a_uuid_of_the_message_id_whatever_key_the_caller_gave() -> None:
    brevo = vendor()

    def key(message: Message, message_id: str) -> str:
        value: str = json_of(brevo.build_request(message, message_id))["headers"]["idempotencyKey"]
        return value

    first = key(rich_message(idempotency_key="order-42"), MESSAGE_ID)
    retry = key(rich_message(idempotency_key=None), MESSAGE_ID)
    other = key(rich_message(idempotency_key="order-42"), "018f3a2b4c5d6e7f8091a2b3c4d6")
    assert first == retry == KEY_UUID != other
    assert uuid.UUID(other).version == 5


def test_names_that_brevo_would_drop_are_rfc2047_encoded() -> None:
    body = body_of(
        rich_message(
            sender=Address("noreply@example.com", "Müller, Jürgen"),
            to=(Address("a@example.com", "Doe, Jane"), Address("b@example.com", "Zoë; Ann")),
            reply_to=(Address("r@example.com", "Desk (ÉU)"),),
        )
    )
    names = [body["sender"]["name"], *(c["name"] for c in body["to"]), body["replyTo"]["name"]]
    assert names[1] == "Doe, Jane"  # all ASCII: Brevo quotes it correctly itself
    for name in (names[0], names[2], names[3]):
        assert name.startswith("=?utf-8?b?") and name.isascii()
    decoded = [str(email.header.make_header(email.header.decode_header(n))) for n in names]
    assert decoded == ["Müller, Jürgen", "Doe, Jane", "Zoë; Ann", "Desk (ÉU)"]


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        rich_message(cc=(), bcc=(), reply_to=(), attachments=(), tags=(), metadata={}),
        rich_message(sender=Address("noreply@example.com", "Müller, Jürgen")),
    ],
    ids=["rich", "sparse", "encoded-name"],
)
def test_request_bodies_validate_against_the_official_schema(message: Message) -> None:
    assert validate(REQUEST_SCHEMA, body_of(message)) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    source = CONTRACT["x-contract"]["source"]
    assert source["repo"] == "getbrevo/brevo-go"
    assert source["license"].startswith("MIT")


def test_an_empty_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_key"):
        BrevoVendor("backup", FakeTransport(ACCEPTED), api_key="")


# -- what Brevo cannot carry -----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(raw_mime=b"MIME-Version: 1.0\r\n\r\n...", text=None, html=None), "raw MIME"),
        (rich_message(subject=""), "empty subject"),
        (rich_message(text="", html=None), "no text or HTML body"),
        (
            rich_message(reply_to=(Address("a@example.com"), Address("b@example.com"))),
            "2 reply-to addresses; Brevo takes one",
        ),
        (
            rich_message(attachments=(Attachment("logo.png", PNG, "image/png", True, "logo@x"),)),
            "inline attachment 'logo.png': Brevo has no Content-ID",
        ),
        (rich_message(attachments=(Attachment("run.exe", b"MZ"),)), "attachment 'run.exe'"),
        (rich_message(attachments=(Attachment("README", b"x"),)), "attachment 'README'"),
        (rich_message(sender=Address("a@example.com", "N" * 71)), "71 characters as sent"),
        (rich_message(headers={"X-Note": "Zoë"}), "header X-Note: non-ASCII value"),
        (rich_message(headers={"x-mailin-custom": "mine"}), "header X-Mailin-custom"),
        (rich_message(headers={"IdempotencyKey": "k"}), "header idempotencyKey"),
    ],
    ids=[
        "raw-mime",
        "subject",
        "body",
        "reply-to",
        "inline",
        "extension",
        "no-extension",
        "long-name",
        "non-ascii-header",
        "metadata-header",
        "idempotency-header",
    ],
)
async def test_unsupported_features_end_as_unsupported_without_a_request(
    message: Message, reason: str
) -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)

    assert result.outcome is Outcome.UNSUPPORTED
    assert reason in result.reason
    assert transport.calls == []


def test_an_own_metadata_header_passes_when_the_message_has_no_metadata() -> None:
    body = body_of(rich_message(headers={"X-Mailin-custom": "mine"}, metadata={}))
    assert body["headers"] == {"X-Mailin-custom": "mine", "idempotencyKey": KEY_UUID}


def test_extensions_are_matched_without_regard_to_case() -> None:
    body = body_of(rich_message(attachments=(Attachment("SCAN.PDF", PDF, "application/pdf"),)))
    assert body["attachment"][0]["name"] == "SCAN.PDF"


# -- send through the pipeline ---------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_id() -> None:
    answer = b'{"messageId":"<201798300811.5787683@relay.domain.com>"}'
    transport = FakeTransport(HttpResponse(201, {}, answer))
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="<201798300811.5787683@relay.domain.com>", status=201
    )
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.url.endswith("/v3/smtp/email")


# -- response → outcome ----------------------------------------------------------


def error(code: str, message: str) -> bytes:
    return orjson.dumps({"code": code, "message": message})


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


def test_any_2xx_is_accepted_with_the_first_id_there_is() -> None:
    assert parse(202, b'{"messageId":"<a@b>"}').vendor_message_id == "<a@b>"
    assert parse(201, b'{"messageIds":["<v1@b>","<v2@b>"]}').vendor_message_id == "<v1@b>"
    assert parse(201) == AttemptResult(Outcome.ACCEPTED, status=201)


def test_the_400_body_these_tests_feed_follows_the_contract() -> None:
    schema = json_schema(SEND["responses"]["400"])
    body = orjson.loads(error("invalid_parameter", "email is not valid in to"))
    assert validate(schema, body) == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("invalid_parameter", "email is not valid in to"),
        ("missing_parameter", "subject is missing"),
        ("out_of_range", "attachment is too big"),
    ],
)
def test_message_errors_are_permanent(code: str, message: str) -> None:
    assert parse(400, error(code, message)) == AttemptResult(
        Outcome.PERMANENT, status=400, reason=f"{code}: {message}"
    )


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (400, error("invalid_parameter", "Sender is invalid / inactive"), "sender or account"),
        (400, error("permission_denied", "plan does not allow it"), "sender or account"),
        (400, error("account_under_validation", "validating"), "sender or account"),
        (401, error("unauthorized", "Key not found"), "API key rejected"),
        (401, b"", "API key rejected"),
        (403, error("permission_denied", "SMTP account not yet activated"), "permission denied"),
        (403, b"", "permission denied"),
        (404, error("document_not_found", "not here"), "check base_url"),
        (405, error("method_not_allowed", "POST not allowed"), "check base_url"),
        (406, error("not_acceptable", "json only"), "check base_url"),
        (302, b"", "check base_url"),
    ],
)
def test_account_and_configuration_trouble_is_vendor_config(
    status: int, body: bytes, words: str
) -> None:
    result = parse(status, body)
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, status)
    assert words in result.reason


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (402, error("not_enough_credits", "You don't have enough credit")),
        (400, error("not_enough_credits", "You don't have enough credit")),
        (402, b""),
    ],
)
def test_no_credit_is_rate_limited_as_quota(status: int, body: bytes) -> None:
    result = parse(status, body)
    assert (result.outcome, result.status) == (Outcome.RATE_LIMITED, status)
    assert result.reason.startswith("quota: ")
    assert result.retry_after is None


def test_a_reused_idempotency_key_is_ambiguous() -> None:
    result = parse(400, error("duplicate_parameter", "idempotencyKey already used"))
    assert (result.outcome, result.status) == (Outcome.AMBIGUOUS, 400)
    assert "earlier attempt reached Brevo" in result.reason


def test_429_takes_the_reset_header_in_seconds() -> None:
    headers = {
        "x-sib-ratelimit-limit": "1000",
        "x-sib-ratelimit-remaining": "0",
        "x-sib-ratelimit-reset": "12",
    }
    result = parse(429, b'{"message":"Too many requests"}', headers)
    assert result == AttemptResult(
        Outcome.RATE_LIMITED,
        status=429,
        reason="rate limited: Too many requests",
        retry_after=12.0,
    )


def test_429_prefers_retry_after_and_reads_it_as_a_date_too() -> None:
    headers = {"retry-after": "3", "x-sib-ratelimit-reset": "60"}
    assert parse(429, headers=headers).retry_after == 3.0
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, headers={"retry-after": when}).retry_after == 45.0


def test_429_without_a_usable_hint_has_no_retry_after() -> None:
    for reset in ("soon", "nan", "inf"):
        result = parse(429, headers={"x-sib-ratelimit-reset": reset})
        assert (result.outcome, result.retry_after) == (Outcome.RATE_LIMITED, None)
    assert parse(429, headers={"x-sib-ratelimit-reset": "-2"}).retry_after == 0.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retriable(status: int) -> None:
    result = parse(status, b'{"message":"Internal error"}', {"retry-after": "9"})
    assert result == AttemptResult(
        Outcome.RETRIABLE, status=status, reason="Internal error", retry_after=9.0
    )


def test_undocumented_4xx_is_retriable_and_says_so() -> None:
    assert parse(413, b"too large") == AttemptResult(
        Outcome.RETRIABLE, status=413, reason="unexpected status: too large"
    )


def test_reason_falls_back_to_the_status_phrase_and_is_kept_short() -> None:
    assert parse(502).reason == "Bad Gateway"
    long = parse(400, error("invalid_parameter", "x" * 1000)).reason
    assert (len(long), long[-1]) == (300, "…")
