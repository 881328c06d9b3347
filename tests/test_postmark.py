"""Postmark adapter: the exact request, Postmark's schema, and the ErrorCode table."""

from __future__ import annotations

import base64
import email.utils
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
from mailmux.vendors.postmark import PostmarkVendor

CONTRACT = load_contract("postmark.send.json")
REQUEST_SCHEMA = json_schema(endpoint(CONTRACT, "POST", "/email")["request"])
OK = orjson.dumps(
    {
        "To": "ana@example.org",
        "SubmittedAt": "2030-01-01T00:00:00.0000000-05:00",
        "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
        "ErrorCode": 0,
        "Message": "OK",
    }
)
ACCEPTED = HttpResponse(200, {}, OK)

#: Postmark takes one tag per message: the rich message repeats its one tag.
rich_message = partial(vendor_kit.rich_message, tags=("receipt", "receipt"))


vendor = vendor_factory(
    PostmarkVendor, "tx", ACCEPTED, api_key="server-token-1", base_url="http://pm.test/"
)


def body_of(message: Message) -> dict[str, Any]:
    return json_of(vendor().build_request(message, MESSAGE_ID))


# -- Message → request ------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "http://pm.test/email"
    assert request.headers == {
        "X-Postmark-Server-Token": "server-token-1",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    assert orjson.loads(request.body) == {
        "From": "Zoë Ålander <noreply@example.com>",
        "To": "Ana María <ana@example.org>, bo@example.net",
        "Cc": "陈伟 <chen@example.com>",
        "Bcc": "audit@example.com",
        "ReplyTo": "Support ✉ <support@example.com>",
        "Subject": "Your receipt — №42 ✓",
        "TextBody": "Thanks for your order.\n",
        "HtmlBody": '<p>Thanks! <img src="cid:logo@x"></p>',
        "Headers": [
            {"Name": "X-Campaign", "Value": "spring"},
            {"Name": "List-Unsubscribe", "Value": "<mailto:u@example.com>"},
        ],
        "Tag": "receipt",
        "Metadata": {"order_id": "42", "customer": "c-7"},
        "Attachments": [
            {
                "Name": "logo.png",
                "Content": base64.b64encode(PNG).decode(),
                "ContentType": "image/png",
                "ContentID": "cid:logo@x",
            },
            {
                "Name": "reçu.pdf",
                "Content": base64.b64encode(PDF).decode(),
                "ContentType": "application/pdf",
            },
        ],
    }


def test_minimal_message_leaves_out_every_empty_field() -> None:
    message = minimal_message(subject="")
    assert body_of(message) == {"From": "a@example.com", "To": "b@example.com", "TextBody": "x"}


def test_names_with_address_syntax_are_quoted_and_idn_domains_go_out_in_punycode() -> None:
    body = body_of(
        rich_message(
            sender=Address("noreply@bücher.example", "Shop, Inc."),
            to=(Address("a@example.com", 'Doe "JD" Jane'), Address("b@example.com", "x;y")),
            reply_to=(Address("r@example.com", "Desk"), Address("s@example.com")),
        )
    )
    assert body["From"] == '"Shop, Inc." <noreply@xn--bcher-kva.example>'
    assert body["To"] == '"Doe \\"JD\\" Jane" <a@example.com>, "x;y" <b@example.com>'
    assert body["ReplyTo"] == "Desk <r@example.com>, s@example.com"
    parsed = email.utils.getaddresses([body["To"]])
    assert parsed == [('Doe "JD" Jane', "a@example.com"), ("x;y", "b@example.com")]


def test_raw_mime_is_fine_when_a_body_was_parsed_from_it() -> None:
    body = body_of(rich_message(raw_mime=b"From: a@example.com\r\n\r\nhello", html=None))
    assert (body["TextBody"], "HtmlBody" in body) == ("Thanks for your order.\n", False)


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        rich_message(reply_to=(), headers={}, attachments=(), tags=(), metadata={}),
        minimal_message(subject="", text=None, html="<b>x"),
    ],
    ids=["rich", "plain", "minimal"],
)
def test_request_bodies_validate_against_postmark_s_schema(message: Message) -> None:
    assert validate(REQUEST_SCHEMA, body_of(message)) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    source = CONTRACT["x-contract"]["source"]
    assert source["repo"] == "APIs-guru/openapi-directory"
    assert "postmarkapp.com" in source["path"]


def test_an_empty_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_key"):
        PostmarkVendor("tx", FakeTransport(ACCEPTED), api_key="")


@pytest.mark.parametrize(
    ("cc", "bcc"),
    [
        ((), (Address("audit@example.com"), Address("boss@example.com"))),
        ((Address("chen@example.com"),), ()),
        ((Address("chen@example.com"),), (Address("audit@example.com"),)),
    ],
    ids=["bcc", "cc", "cc+bcc"],
)
def test_a_message_without_to_is_sent_without_to(
    cc: tuple[Address, ...], bcc: tuple[Address, ...]
) -> None:
    body = body_of(rich_message(to=(), cc=cc, bcc=bcc))
    assert "To" not in body
    assert body.get("Cc") == (", ".join(a.email for a in cc) or None)
    assert body.get("Bcc") == (", ".join(a.email for a in bcc) or None)


# -- what Postmark cannot carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(raw_mime=b"MIME-Version: 1.0\r\n\r\n.", text=None, html=None), "raw MIME"),
        (rich_message(text="", html=None), "no text or HTML body"),
        (rich_message(tags=("a", "b")), "2 tags; Postmark takes one tag"),
        (rich_message(tags=("x" * 1001,)), "1001 characters"),
        (rich_message(metadata={"Order": "1", "order": "2"}), "'Order' and 'order' differ"),
        (
            rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(49))),
            "51 recipients; Postmark takes at most 50",
        ),
        (rich_message(html="x" * (5 * 2**20 + 1)), "HtmlBody over 5 MB"),
        (
            rich_message(attachments=(Attachment("big.bin", b"\0" * (8 * 2**20)),)),
            "Postmark takes at most 10 MB",
        ),
    ],
    ids=["raw", "body", "tags", "tag-length", "metadata", "recipients", "html", "size"],
)
async def test_unsupported_features_end_as_unsupported_without_a_request(
    message: Message, reason: str
) -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)

    assert result.outcome is Outcome.UNSUPPORTED
    assert reason in result.reason
    assert transport.calls == []


def test_fifty_recipients_and_a_1000_character_tag_are_fine() -> None:
    to = tuple(Address(f"r{i}@example.com") for i in range(48))
    body = body_of(rich_message(to=to, tags=("x" * 1000,)))
    assert body["To"].count("@") == 48
    assert len(body["Tag"]) == 1000


# -- send through the pipeline ---------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_id() -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="b7bc2f4a-e38e-4336-af7d-e6c392c2f817", status=200
    )
    ((request, timeout),) = transport.calls
    assert (request.url, timeout) == ("http://pm.test/email", 3.5)


# -- response → outcome ----------------------------------------------------------


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


def error(code: int, message: str) -> bytes:
    return orjson.dumps({"ErrorCode": code, "Message": message})


def test_200_ok_is_accepted_with_the_message_id() -> None:
    assert parse(200, OK) == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="b7bc2f4a-e38e-4336-af7d-e6c392c2f817", status=200
    )


def test_200_naming_inactive_addresses_is_accepted_and_says_who_was_skipped() -> None:
    message = (
        "Message OK, but will not deliver to these inactive addresses: bo@example.net."
        " Inactive recipients are ones that have generated a hard bounce or a spam complaint."
    )
    body = orjson.dumps(
        {"To": "a@example.org", "MessageID": "m-1", "ErrorCode": 0, "Message": message}
    )
    assert parse(200, body) == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="m-1", status=200, reason=message
    )


@pytest.mark.parametrize("body", [b"", b"<html>proxy</html>", b'{"ErrorCode": 0}', b"[]"])
def test_200_without_a_message_id_is_vendor_config(body: bytes) -> None:
    result = parse(200, body)
    assert (result.outcome, result.vendor_message_id) == (Outcome.VENDOR_CONFIG, None)
    assert "check base_url" in result.reason


def test_an_error_code_in_a_200_is_trusted_over_the_status() -> None:
    result = parse(200, error(406, "You tried to send to recipients that are inactive."))
    assert (result.outcome, result.status) == (Outcome.PERMANENT, 200)


@pytest.mark.parametrize(
    ("code", "outcome", "meaning"),
    [
        (10, Outcome.VENDOR_CONFIG, "server token rejected"),
        (300, Outcome.PERMANENT, "invalid email request"),
        (400, Outcome.VENDOR_CONFIG, "sender signature not found"),
        (401, Outcome.VENDOR_CONFIG, "sender signature not confirmed"),
        (402, Outcome.PERMANENT, "invalid JSON"),
        (403, Outcome.PERMANENT, "incompatible JSON"),
        (405, Outcome.VENDOR_CONFIG, "account not allowed to send"),
        (406, Outcome.PERMANENT, "every recipient is inactive"),
        (409, Outcome.VENDOR_CONFIG, "JSON required"),
        (411, Outcome.PERMANENT, "forbidden attachment type"),
        (412, Outcome.VENDOR_CONFIG, "account pending approval"),
        (413, Outcome.VENDOR_CONFIG, "account may not send"),
    ],
)
def test_422_is_classified_by_postmark_s_error_code(
    code: int, outcome: Outcome, meaning: str
) -> None:
    result = parse(422, error(code, "details from Postmark"))
    assert (result.outcome, result.status) == (outcome, 422)
    assert result.reason.startswith(f"ErrorCode {code}, {meaning}")
    assert result.reason.endswith(": details from Postmark")


def test_422_with_an_unknown_or_missing_code_is_retriable() -> None:
    assert parse(422, error(999, "new")) == AttemptResult(
        Outcome.RETRIABLE, status=422, reason="unexpected ErrorCode 999: new"
    )
    assert parse(422, b"<html>oops</html>").reason == "unexpected ErrorCode None: <html>oops</html>"
    assert parse(422).reason == "unexpected ErrorCode None: no details"


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (401, error(10, "Bad or missing server token."), "server token rejected: Bad or missing"),
        (404, b"", "check base_url: Not Found"),
        (405, b"", "check base_url"),
        (302, b"", "redirected; check base_url"),
    ],
)
def test_auth_and_configuration_trouble_is_vendor_config(
    status: int, body: bytes, words: str
) -> None:
    result = parse(status, body)
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, status)
    assert words in result.reason


def test_413_is_permanent() -> None:
    assert parse(413, b"Request Entity Too Large") == AttemptResult(
        Outcome.PERMANENT, status=413, reason="Request Entity Too Large"
    )


@pytest.mark.parametrize("status", [500, 503])
def test_500_and_503_are_retriable(status: int) -> None:
    result = parse(status, error(100, "Maintenance"), {"retry-after": "60"})
    assert result == AttemptResult(
        Outcome.RETRIABLE, status=status, reason="Maintenance", retry_after=60.0
    )


def test_undocumented_4xx_is_retriable_and_says_so() -> None:
    assert parse(418, b"") == AttemptResult(
        Outcome.RETRIABLE, status=418, reason="unexpected status: I'm a Teapot"
    )


def test_429_is_rate_limited_with_retry_after_when_given() -> None:
    assert parse(429, error(429, "Rate limit exceeded"), {"retry-after": "12"}) == AttemptResult(
        Outcome.RATE_LIMITED,
        status=429,
        reason="rate limited: Rate limit exceeded",
        retry_after=12.0,
    )
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, headers={"retry-after": when}).retry_after == 45.0
    assert parse(429).retry_after is None


def test_reason_is_kept_short() -> None:
    result = parse(422, error(300, "x" * 1000))
    assert result.reason.startswith("ErrorCode 300, invalid email request: xxx")
    assert result.reason.endswith("…")
    assert len(result.reason) < 350
