"""Resend adapter: exact requests, the official OpenAPI contract, and the error table."""

from __future__ import annotations

import base64
import email.utils
from dataclasses import replace
from email.header import decode_header, make_header
from typing import Any

import orjson
import pytest
from vendor_kit import (
    MESSAGE_ID,
    NOW,
    PDF,
    FakeTransport,
    endpoint,
    json_of,
    json_schema,
    load_contract,
    minimal_message,
    rich_message,
    validate,
    vendor_factory,
)

from mailmux import __version__
from mailmux.message import Address, Attachment, Message, Original
from mailmux.vendors.base import AttemptResult, HttpResponse, Outcome
from mailmux.vendors.resend import ResendVendor

CONTRACT = load_contract("resend.send.json")
REQUEST_SCHEMA = json_schema(endpoint(CONTRACT, "POST", "/emails")["request"])
EMAIL_ID = "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"
ACCEPTED = HttpResponse(200, {}, orjson.dumps({"id": EMAIL_ID}))


vendor = vendor_factory(
    ResendVendor, "backup", ACCEPTED, api_key="re_test_key", base_url="https://r.test/"
)


def body_of(message: Message) -> dict[str, Any]:
    return json_of(vendor().build_request(message, MESSAGE_ID))


# -- Message → request ------------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://r.test/emails"
    assert request.headers == {
        "Authorization": "Bearer re_test_key",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"mailmux/{__version__}",
        "Idempotency-Key": MESSAGE_ID,
    }
    assert orjson.loads(request.body) == {
        "from": "Zoë Ålander <noreply@example.com>",
        "to": ["=?utf-8?q?Ana_Mar=C3=ADa?= <ana@example.org>", "bo@example.net"],
        "cc": ["=?utf-8?b?6ZmI5Lyf?= <chen@example.com>"],
        "bcc": ["audit@example.com"],
        "reply_to": ["=?utf-8?b?U3VwcG9ydCDinIk=?= <support@example.com>"],
        "subject": "Your receipt — №42 ✓",
        "html": '<p>Thanks! <img src="cid:logo@x"></p>',
        "text": "Thanks for your order.\n",
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": [
            {
                "filename": "logo.png",
                "content": "iVBORw0KGgoAAAANSUhEUi1sb2dv",
                "content_type": "image/png",
                "content_id": "logo@x",
            },
            {
                "filename": "reçu.pdf",
                "content": base64.b64encode(PDF).decode(),
                "content_type": "application/pdf",
            },
        ],
        "tags": [
            {"name": "receipt", "value": "true"},
            {"name": "spring", "value": "true"},
            {"name": "order_id", "value": "42"},
            {"name": "customer", "value": "c-7"},
        ],
    }


def test_minimal_message_leaves_out_every_empty_field() -> None:
    request = vendor().build_request(minimal_message(), MESSAGE_ID)
    assert orjson.loads(request.body) == {
        "from": "a@example.com",
        "to": ["b@example.com"],
        "subject": "Hi",
        "text": "x",
    }


def test_plain_names_go_as_they_are_and_specials_become_encoded_words() -> None:
    body = body_of(
        minimal_message(
            sender=Address("a@bücher.example", "Shop Inc."),
            to=(Address("b@example.com", "Bo Smith"), Address("c@example.com", "Doe, Jane")),
            reply_to=(Address("r@example.com", 'The "Desk"'),),
        )
    )
    assert body["from"] == "Shop Inc. <a@xn--bcher-kva.example>"
    assert body["to"] == ["Bo Smith <b@example.com>", "=?utf-8?q?Doe=2C_Jane?= <c@example.com>"]
    assert body["reply_to"] == ["=?utf-8?q?The_=22Desk=22?= <r@example.com>"]
    name, addr = email.utils.parseaddr(body["to"][1])
    decoded = make_header(decode_header(name))
    assert (str(decoded), addr) == ("Doe, Jane", "c@example.com")


def test_a_metadata_key_equal_to_a_tag_with_the_same_value_is_one_tag() -> None:
    body = body_of(minimal_message(tags=("vip",), metadata={"vip": "true"}))
    assert body["tags"] == [{"name": "vip", "value": "true"}]


def test_a_non_inline_content_id_is_not_sent_so_the_attachment_stays_an_attachment() -> None:
    attachment = Attachment("a.txt", b"x", "text/plain", inline=False, content_id="a@x")
    (sent,) = body_of(minimal_message(attachments=(attachment,)))["attachments"]
    assert "content_id" not in sent


def test_raw_mime_is_sent_from_its_parsed_fields() -> None:
    body = body_of(minimal_message(raw_mime=b"From: a@example.com\r\n\r\nx"))
    assert (body["text"], "html" in body) == ("x", False)


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        minimal_message(),
        rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(50))),
    ],
    ids=["rich", "minimal", "fifty-to"],
)
def test_request_bodies_validate_against_the_official_contract(message: Message) -> None:
    assert validate(REQUEST_SCHEMA, body_of(message)) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    assert CONTRACT["x-contract"]["source"]["repo"] == "resend/resend-openapi"
    assert CONTRACT["x-contract"]["source"]["license"].startswith("MIT")
    (send,) = [e for e in CONTRACT["endpoints"] if e["path"] == "/emails"]
    assert [p["name"] for p in send["parameters"]] == ["Idempotency-Key"]


# -- what Resend cannot carry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(raw_mime=b"MIME-Version: 1.0\r\n\r\n", text=None, html=None), "raw MIME"),
        (rich_message(subject=""), "empty subject"),
        (rich_message(text="", html=None), "no text or HTML body"),
        (rich_message(to=()), "no To recipient: Resend requires to"),
        (rich_message(to=(), cc=()), "no To recipient: Resend requires to"),
        (
            rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(51))),
            "51 To recipients; Resend takes at most 50",
        ),
        (rich_message(sender=Address("a@example.com", "Shop, Inc")), "holds ','"),
        (rich_message(sender=Address("a@example.com", 'The "Shop"')), "holds '\"'"),
        (rich_message(tags=("spring sale",)), "tag 'spring sale'"),
        (rich_message(tags=("x" * 257,)), "1 to 256 ASCII letters"),
        (rich_message(tags=("café",)), "tag 'café'"),
        (rich_message(metadata={"order id": "1"}), "metadata key 'order id'"),
        (rich_message(metadata={"email": "a@example.com"}), "metadata value of 'email'"),
        (rich_message(metadata={"k": ""}), "metadata value of 'k'"),
        (rich_message(metadata={"receipt": "no"}), "metadata key 'receipt' is also a tag"),
        (
            rich_message(
                attachments=(Attachment("a.png", b"x", "image/png", inline=True, content_id=None),)
            ),
            "has no content id",
        ),
    ],
    ids=[
        "raw-mime",
        "subject",
        "body",
        "cc-and-bcc",
        "bcc-only",
        "too-many-to",
        "from-comma",
        "from-quote",
        "tag-space",
        "tag-length",
        "tag-unicode",
        "metadata-key",
        "metadata-value",
        "metadata-empty",
        "metadata-clash",
        "inline-no-cid",
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


def test_the_idempotency_key_is_the_message_id_whatever_key_the_caller_gave() -> None:
    resend = vendor()
    first = resend.build_request(rich_message(idempotency_key="order-42"), MESSAGE_ID)
    retry = resend.build_request(rich_message(idempotency_key="order-42"), MESSAGE_ID)
    other = resend.build_request(rich_message(idempotency_key="order-42"), "018f3a2b4c5d0000")
    keyless = resend.build_request(rich_message(idempotency_key=None), MESSAGE_ID)

    assert first.headers["Idempotency-Key"] == retry.headers["Idempotency-Key"] == MESSAGE_ID
    assert first.body == retry.body  # Resend wants the same body again under one key
    assert other.headers["Idempotency-Key"] == "018f3a2b4c5d0000"
    assert keyless.headers["Idempotency-Key"] == MESSAGE_ID


# -- pass-through of a request made to mailmux's Resend shape -------------------------


@pytest.mark.parametrize(
    ("endpoint_name", "url"),
    [("emails", "https://r.test/emails"), ("batch", "https://r.test/emails/batch")],
)
def test_a_passed_through_request_keeps_its_body_and_gets_the_account_s_key(
    endpoint_name: str, url: str
) -> None:
    body = b'{"from":"a@example.com","template":{"id":"t"}}'
    original = Original("resend", endpoint_name, body, "application/json; charset=utf-8")
    request = vendor().passthrough_request(original, MESSAGE_ID)

    assert (request.method, request.url, request.body) == ("POST", url, body)
    assert request.headers["Authorization"] == "Bearer re_test_key"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["Idempotency-Key"] == MESSAGE_ID


async def test_an_unknown_endpoint_is_unsupported_and_a_batch_of_one_s_id_is_read() -> None:
    odd = Message(Address("a@example.com"), (Address("b@example.com"),), subject="s", text="t")
    odd = replace(odd, original=Original("resend", "audiences", b"{}", "application/json"))
    unsupported = await vendor().send(odd, timeout=1.0, message_id=MESSAGE_ID)
    batch = HttpResponse(200, {}, orjson.dumps({"data": [{"id": EMAIL_ID}]}))
    two = HttpResponse(200, {}, orjson.dumps({"data": [{"id": "x"}, {"id": "y"}]}))

    assert unsupported.outcome is Outcome.UNSUPPORTED
    assert vendor().parse_response(batch).vendor_message_id == EMAIL_ID
    assert vendor().parse_response(two).outcome is Outcome.AMBIGUOUS


# -- send through the pipeline --------------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_id() -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(Outcome.ACCEPTED, vendor_message_id=EMAIL_ID, status=200)
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.headers["Idempotency-Key"] == MESSAGE_ID


def test_an_empty_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_key"):
        ResendVendor("backup", FakeTransport(ACCEPTED), api_key="")


# -- response → outcome ---------------------------------------------------------------


def error(status: int, name: str, message: str = "It went wrong.") -> bytes:
    return orjson.dumps({"statusCode": status, "name": name, "message": message})


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


@pytest.mark.parametrize("body", [b"", b"{}", b'{"id": ""}', b"<html>hi</html>"])
def test_a_2xx_without_an_id_is_ambiguous(body: bytes) -> None:
    result = parse(200, body)
    assert (result.outcome, result.status) == (Outcome.AMBIGUOUS, 200)
    assert "check base_url" in result.reason


@pytest.mark.parametrize(
    ("status", "name", "message", "outcome"),
    [
        (400, "validation_error", "Invalid `to` field.", Outcome.PERMANENT),
        (400, "validation_error", "API key is invalid", Outcome.VENDOR_CONFIG),
        (400, "invalid_idempotency_key", "The key must be 1-256 chars.", Outcome.UNSUPPORTED),
        (401, "missing_api_key", "Missing API key.", Outcome.VENDOR_CONFIG),
        (401, "restricted_api_key", "Restricted to sending.", Outcome.VENDOR_CONFIG),
        (403, "invalid_api_key", "API key is invalid.", Outcome.VENDOR_CONFIG),
        (403, "validation_error", "You can only send testing emails to…", Outcome.VENDOR_CONFIG),
        (404, "not_found", "The requested endpoint does not exist.", Outcome.VENDOR_CONFIG),
        (405, "method_not_allowed", "Method is not allowed.", Outcome.VENDOR_CONFIG),
        (409, "invalid_idempotent_request", "Same key, other payload.", Outcome.AMBIGUOUS),
        (409, "concurrent_idempotent_requests", "Still in progress.", Outcome.AMBIGUOUS),
        (409, "conflict", "Something else.", Outcome.RETRIABLE),
        (413, "payload_too_large", "Too big.", Outcome.UNSUPPORTED),
        (422, "invalid_from_address", "Invalid `from` field.", Outcome.VENDOR_CONFIG),
        (422, "missing_required_field", "Missing `to` field.", Outcome.PERMANENT),
        (422, "invalid_attachment", "Attachment must have content.", Outcome.PERMANENT),
        (422, "invalid_parameter", "Not a valid UUID.", Outcome.PERMANENT),
        (451, "security_error", "Invalid characters in the payload.", Outcome.UNSUPPORTED),
        (500, "application_error", "Something went wrong.", Outcome.RETRIABLE),
        (503, "internal_server_error", "Unavailable.", Outcome.RETRIABLE),
        (418, "teapot", "Undocumented.", Outcome.RETRIABLE),
        (301, "moved", "Elsewhere.", Outcome.VENDOR_CONFIG),
    ],
)
def test_documented_errors_map_to_their_outcome(
    status: int, name: str, message: str, outcome: Outcome
) -> None:
    result = parse(status, error(status, name, message))
    assert (result.outcome, result.status) == (outcome, status)
    assert result.reason.endswith(f"{name}: {message}")


def test_reasons_say_what_to_do() -> None:
    assert parse(403, error(403, "invalid_api_key", "API key is invalid.")).reason == (
        "forbidden (invalid API key, unverified domain, or a test-only account):"
        " invalid_api_key: API key is invalid."
    )
    assert parse(422, error(422, "invalid_from_address", "Invalid.")).reason == (
        "Resend will not send for this sender: invalid_from_address: Invalid."
    )
    assert parse(451, error(451, "security_error", "Bad.")).reason == (
        "resend: security_error: Bad."
    )
    assert parse(418).reason == "unexpected status: I'm a Teapot"
    assert parse(404).reason == "not found; check base_url: Not Found"
    assert parse(308).reason == "redirected; check base_url: Permanent Redirect"


def test_rate_limit_takes_retry_after_then_ratelimit_reset() -> None:
    body = error(429, "rate_limit_exceeded", "Too many requests.")
    assert parse(429, body, {"retry-after": "2", "ratelimit-reset": "9"}) == AttemptResult(
        Outcome.RATE_LIMITED,
        status=429,
        reason="rate limited: rate_limit_exceeded: Too many requests.",
        retry_after=2.0,
    )
    assert parse(429, body, {"ratelimit-reset": "9"}).retry_after == 9.0
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, body, {"retry-after": when}).retry_after == 45.0
    for reset in ("soon", "nan", ""):
        assert parse(429, body, {"ratelimit-reset": reset}).retry_after is None
    assert parse(429, body, {"ratelimit-reset": "-3"}).retry_after == 0.0


@pytest.mark.parametrize("name", ["daily_quota_exceeded", "monthly_quota_exceeded"])
def test_quota_errors_are_rate_limited_and_say_quota(name: str) -> None:
    result = parse(429, error(429, name, "You have reached your quota."), {"retry-after": "3600"})
    assert result == AttemptResult(
        Outcome.RATE_LIMITED,
        status=429,
        reason=f"{name.replace('_', ' ')} (quota): {name}: You have reached your quota.",
        retry_after=3600.0,
    )


def test_a_concurrent_idempotent_request_keeps_retry_after() -> None:
    body = error(409, "concurrent_idempotent_requests", "In progress.")
    assert parse(409, body, {"retry-after": "1"}).retry_after == 1.0
    assert parse(503, headers={"retry-after": "9"}).retry_after == 9.0
    assert parse(503, headers={"ratelimit-reset": "1"}).retry_after is None
    assert parse(400, error(400, "validation_error"), {"retry-after": "9"}).retry_after is None


def test_reason_falls_back_to_the_body_then_to_the_phrase_and_is_short() -> None:
    assert parse(502, b"<html>Bad gateway</html>").reason == "<html>Bad gateway</html>"
    assert parse(502).reason == "Bad Gateway"
    assert parse(599).reason == "HTTP 599"
    assert parse(400, b'{"message": "no name"}').reason == "no name"
    long = parse(422, error(422, "validation_error", "x" * 1000)).reason
    assert len(long) == 300
    assert long.endswith("…")
