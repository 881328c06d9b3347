"""SendGrid adapter: exact request bodies, the official schema, and the status table."""

from __future__ import annotations

import base64
import email.utils
from typing import Any

import orjson
import pytest
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
    rich_message,
    validate,
    vendor_factory,
)

from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import AttemptResult, HttpResponse, Outcome
from mailmux.vendors.sendgrid import SendGridVendor

CONTRACT = load_contract("sendgrid.send.json")
REQUEST_SCHEMA = json_schema(endpoint(CONTRACT, "POST", "/v3/mail/send")["request"])
ACCEPTED = HttpResponse(202, {"x-message-id": "sg-1"})


vendor = vendor_factory(
    SendGridVendor,
    "primary",
    ACCEPTED,
    api_key="SG.test-key",
    base_url="https://api.eu.sendgrid.com/",
)


def body_of(message: Message) -> dict[str, Any]:
    return json_of(vendor().build_request(message, MESSAGE_ID))


# -- Message → request ------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://api.eu.sendgrid.com/v3/mail/send"
    assert request.headers == {
        "Authorization": "Bearer SG.test-key",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    assert orjson.loads(request.body) == {
        "personalizations": [
            {
                "to": [
                    {"email": "ana@example.org", "name": "Ana María"},
                    {"email": "bo@example.net"},
                ],
                "cc": [{"email": "chen@example.com", "name": "陈伟"}],
                "bcc": [{"email": "audit@example.com"}],
                "custom_args": {"order_id": "42", "customer": "c-7"},
            }
        ],
        "from": {"email": "noreply@example.com", "name": "Zoë Ålander"},
        "reply_to": {"email": "support@example.com", "name": "Support ✉"},
        "subject": "Your receipt — №42 ✓",
        "content": [
            {"type": "text/plain", "value": "Thanks for your order.\n"},
            {"type": "text/html", "value": '<p>Thanks! <img src="cid:logo@x"></p>'},
        ],
        "attachments": [
            {
                "content": base64.b64encode(PNG).decode(),
                "filename": "logo.png",
                "type": "image/png",
                "disposition": "inline",
                "content_id": "logo@x",
            },
            {
                "content": base64.b64encode(PDF).decode(),
                "filename": "reçu.pdf",
                "type": "application/pdf",
                "disposition": "attachment",
            },
        ],
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        "categories": ["receipt", "spring"],
    }


def test_minimal_message_leaves_out_every_empty_field() -> None:
    message = minimal_message(text=None, html="<b>x")
    assert body_of(message) == {
        "personalizations": [{"to": [{"email": "b@example.com"}]}],
        "from": {"email": "a@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/html", "value": "<b>x"}],
    }


def test_a_bcc_only_message_becomes_one_personalization_per_recipient() -> None:
    bcc = (Address("audit@example.com"), Address("boss@example.com", "Boss, The"))
    body = body_of(rich_message(to=(), cc=(), bcc=bcc))
    args = {"order_id": "42", "customer": "c-7"}
    # Each copy is addressed to its own recipient only: none names another.
    assert body["personalizations"] == [
        {"to": [{"email": "audit@example.com"}], "custom_args": args},
        {"to": [{"email": "boss@example.com", "name": '"Boss, The"'}], "custom_args": args},
    ]
    assert validate(REQUEST_SCHEMA, body) == []


@pytest.mark.parametrize("bcc", [(), (Address("audit@example.com"),)], ids=["cc", "cc+bcc"])
async def test_cc_without_to_is_unsupported_without_a_request(bcc: tuple[Address, ...]) -> None:
    transport = FakeTransport(ACCEPTED)
    message = rich_message(to=(), bcc=bcc)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)
    assert result.outcome is Outcome.UNSUPPORTED
    assert result.reason.startswith("cc without a To recipient: ")
    assert transport.calls == []


def test_several_reply_to_addresses_use_reply_to_list() -> None:
    reply_to = (Address("one@example.com", "One"), Address("two@example.com"))
    body = body_of(rich_message(reply_to=reply_to))
    assert "reply_to" not in body
    assert body["reply_to_list"] == [
        {"email": "one@example.com", "name": "One"},
        {"email": "two@example.com"},
    ]


def test_recipient_names_with_comma_or_semicolon_are_quoted_but_sender_names_are_not() -> None:
    body = body_of(
        rich_message(
            sender=Address("noreply@example.com", "Shop, Inc."),
            to=(Address("a@example.com", 'Doe, "JD" Jane'), Address("b@example.com", "x;y")),
            cc=(Address("c@example.com", "Plain Name"),),
            reply_to=(Address("r@example.com", "Desk; EU"),),
        )
    )
    assert body["personalizations"][0]["to"] == [
        {"email": "a@example.com", "name": '"Doe, \\"JD\\" Jane"'},
        {"email": "b@example.com", "name": '"x;y"'},
    ]
    assert body["personalizations"][0]["cc"] == [{"email": "c@example.com", "name": "Plain Name"}]
    assert body["from"] == {"email": "noreply@example.com", "name": "Shop, Inc."}
    assert body["reply_to"] == {"email": "r@example.com", "name": "Desk; EU"}


def test_raw_mime_is_fine_when_a_body_was_parsed_from_it() -> None:
    body = body_of(rich_message(raw_mime=b"From: a@example.com\r\n\r\nhello", html=None))
    assert body["content"] == [{"type": "text/plain", "value": "Thanks for your order.\n"}]


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        rich_message(reply_to=(Address("a@example.com"), Address("b@example.com", "B"))),
        rich_message(tags=tuple(f"t{i}" for i in range(10)), metadata={}, headers={}),
        minimal_message(subject="s", text="t"),
    ],
    ids=["rich", "reply_to_list", "ten-tags", "minimal"],
)
def test_request_bodies_validate_against_the_official_schema(message: Message) -> None:
    assert validate(REQUEST_SCHEMA, body_of(message)) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    source = CONTRACT["x-contract"]["source"]
    assert source["repo"] == "twilio/sendgrid-oai"
    assert source["license"].startswith("MIT")


# -- what SendGrid cannot carry ------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(raw_mime=b"MIME-Version: 1.0\r\n\r\n...", text=None, html=None), "raw MIME"),
        (rich_message(subject=""), "empty subject"),
        (rich_message(text="", html=None), "no text or HTML body"),
        (rich_message(tags=tuple(f"t{i}" for i in range(11))), "11 tags; SendGrid takes at most"),
        (rich_message(tags=("x" * 256,)), "256 characters"),
        (rich_message(metadata={"blob": "x" * 9_990}), "custom_args under 10000 bytes"),
        (
            rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(999))),
            "1001 recipients; SendGrid takes at most 1000",
        ),
        (rich_message(bcc=(Address("ANA@example.org"),)), "ANA@example.org appears twice"),
        (rich_message(headers={"Reply-To": "x@example.com"}), "header Reply-To"),
        (rich_message(attachments=(Attachment("empty.txt", b""),)), "empty attachment 'empty.txt'"),
    ],
    ids=[
        "raw-mime",
        "subject",
        "body",
        "tags",
        "tag-length",
        "metadata",
        "recipients",
        "duplicate",
        "reserved-header",
        "empty-attachment",
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


def test_largest_metadata_under_the_limit_is_sent() -> None:
    metadata = {"blob": "x" * 9_980}  # 9,991 bytes once encoded
    body = body_of(rich_message(metadata=metadata))
    assert body["personalizations"][0]["custom_args"] == metadata


# -- send through the pipeline ---------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_id() -> None:
    transport = FakeTransport(HttpResponse(202, {"x-message-id": "W86EgYT6SQKk0lRflfLRsA"}))
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="W86EgYT6SQKk0lRflfLRsA", status=202
    )
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.url.endswith("/v3/mail/send")


def test_an_empty_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_key"):
        SendGridVendor("primary", FakeTransport(ACCEPTED), api_key="")


# -- response → outcome ----------------------------------------------------------


def errors(*pairs: tuple[str, str | None]) -> bytes:
    return orjson.dumps({"errors": [{"message": m, "field": f, "help": None} for m, f in pairs]})


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


def test_any_2xx_is_accepted_even_without_an_id() -> None:
    assert parse(202, headers={"x-message-id": "abc"}) == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="abc", status=202
    )
    assert parse(200) == AttemptResult(Outcome.ACCEPTED, status=200)


def test_400_is_permanent_with_sendgrid_messages_joined() -> None:
    body = errors(
        ("Does not contain a valid address.", "personalizations.0.to.0.email"),
        ("The from object must be provided.", "from"),
        ("Bad request", None),
    )
    assert parse(400, body) == AttemptResult(
        Outcome.PERMANENT,
        status=400,
        reason=(
            "personalizations.0.to.0.email: Does not contain a valid address.;"
            " from: The from object must be provided.; Bad request"
        ),
    )


def test_413_is_permanent() -> None:
    result = parse(413, errors(("Payload too large", None)))
    assert (result.outcome, result.status, result.reason) == (
        Outcome.PERMANENT,
        413,
        "Payload too large",
    )


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "API key rejected"),
        (403, "temporary block"),
        (403, "not verified"),
        (404, "check base_url"),
        (405, "check base_url"),
        (406, "check base_url"),
        (451, "data residency"),
        (301, "check base_url"),
    ],
)
def test_account_and_configuration_trouble_is_vendor_config(status: int, words: str) -> None:
    result = parse(status, errors(("nope", None)))
    assert result.outcome is Outcome.VENDOR_CONFIG
    assert result.status == status
    assert words in result.reason
    assert result.reason.endswith(": nope")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retriable(status: int) -> None:
    result = parse(status, errors(("Internal error", None)))
    assert result == AttemptResult(Outcome.RETRIABLE, status=status, reason="Internal error")


def test_503_keeps_retry_after() -> None:
    assert parse(503, headers={"retry-after": "9"}).retry_after == 9.0


def test_undocumented_4xx_is_retriable_and_says_so() -> None:
    result = parse(409, errors(("conflict", None)))
    assert result == AttemptResult(
        Outcome.RETRIABLE, status=409, reason="unexpected status: conflict"
    )


def test_429_takes_retry_after_in_seconds() -> None:
    result = parse(429, errors(("too many requests", None)), {"retry-after": "30"})
    assert result == AttemptResult(
        Outcome.RATE_LIMITED, status=429, reason="rate limited: too many requests", retry_after=30.0
    )


def test_429_takes_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, headers={"retry-after": when}).retry_after == 45.0


def test_429_falls_back_to_the_rate_limit_reset_epoch() -> None:
    headers = {"x-ratelimit-limit": "600", "x-ratelimit-remaining": "0"}
    headers["x-ratelimit-reset"] = str(int(NOW) + 12)
    assert parse(429, headers=headers).retry_after == 12.0
    assert parse(429, headers={"x-ratelimit-reset": str(int(NOW) - 5)}).retry_after == 0.0


def test_429_prefers_retry_after_over_the_reset_epoch() -> None:
    headers = {"retry-after": "3", "x-ratelimit-reset": str(int(NOW) + 60)}
    assert parse(429, headers=headers).retry_after == 3.0


def test_429_without_a_hint_has_no_retry_after() -> None:
    for reset in ("soon", "nan"):
        result = parse(429, headers={"x-ratelimit-reset": reset})
        assert (result.outcome, result.retry_after) == (Outcome.RATE_LIMITED, None)
    assert parse(429).retry_after is None


def test_reason_falls_back_to_the_body_then_to_the_status_phrase() -> None:
    assert parse(502, b"<html>Bad gateway from the proxy</html>").reason == (
        "<html>Bad gateway from the proxy</html>"
    )
    assert parse(502).reason == "Bad Gateway"
    assert parse(400, b'{"errors": "not a list"}').reason == '{"errors": "not a list"}'


def test_reason_is_kept_short() -> None:
    result = parse(400, errors(("x" * 1000, None)))
    assert len(result.reason) == 300
    assert result.reason.endswith("…")
