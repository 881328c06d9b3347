"""Mailjet adapter: exact request bodies, the SDK-derived schema, and the error table."""

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
from mailmux.vendors.mailjet import MailjetVendor

CONTRACT = load_contract("mailjet.send.json")
SEND = endpoint(CONTRACT, "POST", "/v3.1/send")
REQUEST_SCHEMA = json_schema(SEND["request"])
BASIC = "Basic " + base64.b64encode(b"mj-key:mj-secret").decode()
RECIPIENTS = ("To", "Cc", "Bcc")

#: Mailjet takes one distinct tag per message, so the rich message repeats its one tag;
#: its metadata (sent as the EventPayload JSON string) carries a non-ASCII value.
rich_message = partial(
    vendor_kit.rich_message,
    tags=("receipt", "receipt"),
    metadata={"order_id": "42", "customer": "Zoë"},
)


def body_of(message: Message) -> dict[str, Any]:
    return json_of(vendor().build_request(message, MESSAGE_ID))


def success(uuid: str = "uuid-1", number: int = 1152921519812251571) -> bytes:
    recipient = {
        "Email": "ana@example.org",
        "MessageUUID": uuid,
        "MessageID": number,
        "MessageHref": f"https://api.mailjet.com/v3/REST/message/{number}",
    }
    return orjson.dumps(
        {
            "Messages": [
                {"Status": "success", "CustomID": "", "To": [recipient], "Cc": [], "Bcc": []}
            ]
        }
    )


ACCEPTED = HttpResponse(200, {}, success("uuid-1"))

vendor = vendor_factory(
    MailjetVendor,
    "backup",
    ACCEPTED,
    api_key="mj-key",
    api_secret="mj-secret",
    base_url="https://api.eu.mailjet.example/",
)


def message_errors(*errors: tuple[str, int, str, list[str]]) -> bytes:
    entries = [
        {
            "ErrorIdentifier": f"id-{n}",
            "ErrorCode": code,
            "StatusCode": status,
            "ErrorMessage": text,
            "ErrorRelatedTo": related,
        }
        for n, (code, status, text, related) in enumerate(errors)
    ]
    return orjson.dumps({"Messages": [{"Status": "error", "Errors": entries}]})


def global_error(code: str, status: int, text: str) -> bytes:
    return orjson.dumps(
        {
            "ErrorIdentifier": "06df1144",
            "ErrorCode": code,
            "StatusCode": status,
            "ErrorMessage": text,
        }
    )


# -- Message → request ------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://api.eu.mailjet.example/v3.1/send"
    assert request.headers == {
        "Authorization": BASIC,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Idempotency-Key": MESSAGE_ID,
    }
    assert orjson.loads(request.body) == {
        "Messages": [
            {
                "From": {"Email": "noreply@example.com", "Name": "Zoë Ålander"},
                "To": [
                    {"Email": "ana@example.org", "Name": "Ana María"},
                    {"Email": "bo@example.net"},
                ],
                "Cc": [{"Email": "chen@example.com", "Name": "陈伟"}],
                "Bcc": [{"Email": "audit@example.com"}],
                "ReplyTo": {"Email": "support@example.com", "Name": "Support ✉"},
                "Subject": "Your receipt — №42 ✓",
                "TextPart": "Thanks for your order.\n",
                "HTMLPart": '<p>Thanks! <img src="cid:logo@x"></p>',
                "Headers": {
                    "X-Campaign": "spring",
                    "List-Unsubscribe": "<mailto:u@example.com>",
                },
                "Attachments": [
                    {
                        "ContentType": "application/pdf",
                        "Filename": "reçu.pdf",
                        "Base64Content": base64.b64encode(PDF).decode(),
                    }
                ],
                "InlinedAttachments": [
                    {
                        "ContentType": "image/png",
                        "Filename": "logo.png",
                        "Base64Content": base64.b64encode(PNG).decode(),
                        "ContentID": "logo@x",
                    }
                ],
                "CustomCampaign": "receipt",
                "EventPayload": '{"order_id":"42","customer":"Zoë"}',
            }
        ]
    }


def test_the_idempotency_key_is_the_message_id_whatever_key_the_caller_gave() -> None:
    mailjet = vendor()
    first = mailjet.build_request(minimal_message(idempotency_key="order-42"), MESSAGE_ID)
    retry = mailjet.build_request(minimal_message(), MESSAGE_ID)
    other = mailjet.build_request(minimal_message(idempotency_key="order-42"), "018f3a2b4c5d")
    assert first.headers["Idempotency-Key"] == retry.headers["Idempotency-Key"] == MESSAGE_ID
    assert other.headers["Idempotency-Key"] == "018f3a2b4c5d"


def test_minimal_message_leaves_out_every_empty_field() -> None:
    request = vendor().build_request(
        minimal_message(subject="", text=None, html="<b>x"), MESSAGE_ID
    )
    assert orjson.loads(request.body) == {
        "Messages": [
            {
                "From": {"Email": "a@example.com"},
                "To": [{"Email": "b@example.com"}],
                "HTMLPart": "<b>x",
            }
        ]
    }


def test_a_bcc_only_message_is_one_message_per_recipient_with_the_rest_in_globals() -> None:
    hidden = (Address("audit@example.com"), Address("boss@example.com", "Boss"))
    body = body_of(rich_message(to=(), cc=(), bcc=hidden))

    assert body["Messages"] == [
        {"To": [{"Email": "audit@example.com"}]},
        {"To": [{"Email": "boss@example.com", "Name": "Boss"}]},
    ]
    # Everything else is sent once, in Globals: the single message's fields but recipients.
    (entry,) = body_of(rich_message())["Messages"]
    assert body["Globals"] == {k: v for k, v in entry.items() if k not in RECIPIENTS}
    assert body.keys() == {"Globals", "Messages"}
    assert validate(REQUEST_SCHEMA, body) == []


@pytest.mark.parametrize("bcc", [(), (Address("audit@example.com"),)], ids=["cc", "cc+bcc"])
async def test_cc_without_to_is_unsupported_without_a_request(bcc: tuple[Address, ...]) -> None:
    transport = FakeTransport(ACCEPTED)
    message = rich_message(to=(), bcc=bcc)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)
    assert result.outcome is Outcome.UNSUPPORTED
    assert result.reason.startswith("cc without a To recipient: ")
    assert transport.calls == []


def test_event_payload_decodes_back_to_the_metadata() -> None:
    metadata = {"order_id": "42", "note": 'quote " and ✓'}
    payload = body_of(rich_message(metadata=metadata))["Messages"][0]["EventPayload"]
    assert orjson.loads(payload) == metadata


def test_a_content_id_on_a_regular_attachment_is_not_sent() -> None:
    attachment = Attachment("a.txt", b"hello", "text/plain", content_id="part1@x")
    entry = body_of(rich_message(attachments=(attachment,)))["Messages"][0]
    assert entry["Attachments"] == [
        {"ContentType": "text/plain", "Filename": "a.txt", "Base64Content": "aGVsbG8="}
    ]
    assert "InlinedAttachments" not in entry


@pytest.mark.parametrize(
    "message",
    [rich_message(), minimal_message(), rich_message(cc=(), bcc=(), attachments=(), tags=())],
    ids=["rich", "minimal", "to-only"],
)
def test_request_bodies_validate_against_the_sdk_schema(message: Message) -> None:
    assert validate(REQUEST_SCHEMA, body_of(message)) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    source = CONTRACT["x-contract"]["source"]
    assert source["repo"] == "mailjet/mailjet-apiv3-nodejs"
    assert source["license"].startswith("MIT")


def test_empty_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_secret"):
        MailjetVendor("backup", FakeTransport(ACCEPTED), api_key="k", api_secret="")


# -- what Mailjet cannot carry -------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(raw_mime=b"MIME-Version: 1.0\r\n\r\n...", text=None, html=None), "raw MIME"),
        (rich_message(text="", html=None), "no text or HTML body"),
        (
            rich_message(reply_to=(Address("a@example.com"), Address("b@example.com"))),
            "2 reply-to addresses; Mailjet takes one",
        ),
        (
            rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(49))),
            "51 recipients; Mailjet takes at most 50",
        ),
        (rich_message(tags=("receipt", "spring")), "2 distinct tags; Mailjet takes one"),
        (rich_message(tags=("x" * 256,)), "tag of 256 characters"),
        (rich_message(headers={"X-MJ-CustomID": "1"}), "header X-MJ-CustomID"),
        (rich_message(headers={"x-mailjet-campaign": "c"}), "header x-mailjet-campaign"),
        (
            rich_message(headers={f"X-H{i}": "v" for i in range(51)}),
            "51 custom headers; Mailjet takes at most 50",
        ),
        (
            rich_message(attachments=tuple(Attachment(f"{i}.txt", b"x") for i in range(51))),
            "51 attachments; Mailjet takes at most 50",
        ),
        (rich_message(attachments=(Attachment("empty.txt", b""),)), "empty attachment"),
    ],
    ids=[
        "raw-mime",
        "body",
        "reply-to",
        "recipients",
        "tags",
        "tag-length",
        "mj-header",
        "mailjet-header",
        "headers",
        "attachments",
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


def test_raw_mime_is_fine_when_a_body_was_parsed_from_it() -> None:
    entry = body_of(rich_message(raw_mime=b"From: a@example.com\r\n\r\nhello", html=None))
    assert entry["Messages"][0]["TextPart"] == "Thanks for your order.\n"


# -- send through the pipeline ---------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_uuid() -> None:
    transport = FakeTransport(
        HttpResponse(200, {}, success("1ab23cd4-e567-8901-b234-5678cd90ef12"))
    )
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="1ab23cd4-e567-8901-b234-5678cd90ef12", status=200
    )
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.url.endswith("/v3.1/send")


# -- response → outcome ----------------------------------------------------------


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        ("200", success()),
        ("400", message_errors(("mj-0013", 400, "invalid address", ["To[0].Email"]))),
        ("400", global_error("mj-0002", 400, "Malformed JSON")),
        ("401", global_error("mj-0015", 401, "API key authentication failure")),
        ("403", message_errors(("send-0008", 403, "not an authorized sender", ["From"]))),
    ],
    ids=["success", "per-message", "global", "auth", "sender"],
)
def test_the_answers_these_tests_feed_follow_the_contract(status: str, body: bytes) -> None:
    assert validate(json_schema(SEND["responses"][status]), orjson.loads(body)) == []


def test_an_empty_uuid_falls_back_to_the_numeric_id_as_a_string() -> None:
    result = parse(200, success(uuid="", number=1152921519812251571))
    assert result.vendor_message_id == "1152921519812251571"  # exact: no float on the way
    assert parse(200, success(uuid="", number=0)).vendor_message_id is None


def test_a_2xx_without_a_readable_body_is_still_accepted() -> None:
    assert parse(200, b"not json") == AttemptResult(Outcome.ACCEPTED, status=200)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (("mj-0013", 400, '"x@" is an invalid email address.', ["To[0].Email"]), 400),
        (("send-0003", 400, "No content", ["HTMLPart", "TextPart", "TemplateID"]), 400),
        (("send-0015", 400, "Too many recipients", ["To", "Cc", "Bcc"]), 400),
        (("mj-0011", 400, "Payload too large", []), 400),
        (("mj-0013", 400, "invalid address", ["To[0].Email"]), 200),
    ],
    ids=["address", "no-content", "recipients", "payload", "inside-a-200"],
)
def test_per_message_validation_errors_are_permanent(
    error: tuple[str, int, str, list[str]], status: int
) -> None:
    result = parse(status, message_errors(error))
    assert (result.outcome, result.status) == (Outcome.PERMANENT, status)
    assert result.reason.startswith(error[0])
    assert error[2] in result.reason


def test_copies_of_a_bcc_only_message_taken_by_mailjet_make_it_accepted() -> None:
    taken = orjson.loads(success("uuid-7"))["Messages"][0]
    refused = orjson.loads(message_errors(("mj-0013", 400, "invalid address", ["To[0].Email"])))
    body = orjson.dumps({"Messages": [refused["Messages"][0], taken]})
    result = parse(400, body)
    assert (result.outcome, result.status, result.vendor_message_id) == (
        Outcome.ACCEPTED,
        400,
        "uuid-7",
    )
    assert result.reason == "1 of 2 copies refused: mj-0013 (To[0].Email): invalid address"


def test_every_copy_refused_is_classified_by_the_first_copy_s_errors() -> None:
    first = message_errors(("send-0008", 403, "not an authorized sender", ["From"]))
    both = orjson.dumps({"Messages": orjson.loads(first)["Messages"] * 2})
    assert parse(403, both).outcome is Outcome.VENDOR_CONFIG


def test_the_reason_names_each_error_and_what_it_relates_to() -> None:
    body = message_errors(
        ("mj-0004", 400, 'Type mismatch. Expected type "array of emails".', ["HTMLPart"]),
        ("mj-0003", 400, "The To is mandatory but missing from the input", ["To"]),
    )
    assert parse(400, body).reason == (
        'mj-0004 (HTMLPart): Type mismatch. Expected type "array of emails".;'
        " mj-0003 (To): The To is mandatory but missing from the input"
    )


@pytest.mark.parametrize("code", ["send-0006", "send-0007", "send-0008", "send-0010"])
def test_sender_and_template_errors_are_vendor_config(code: str) -> None:
    body = message_errors(
        (code, 403, '"noreply@example.com" is not an authorized sender', ["From"])
    )
    result = parse(403, body)
    assert result.outcome is Outcome.VENDOR_CONFIG
    assert result.reason.startswith(f"sender or account refused: {code} (From)")


def test_a_sender_error_wins_over_a_recipient_error_in_the_same_message() -> None:
    body = message_errors(
        ("mj-0013", 400, "invalid address", ["To[0].Email"]),
        ("send-0008", 403, "not an authorized sender", ["From"]),
    )
    assert parse(400, body).outcome is Outcome.VENDOR_CONFIG


def test_per_message_429_and_5xx_count_against_the_vendor() -> None:
    throttled = parse(429, message_errors(("mj-9999", 429, "slow down", [])), {"retry-after": "4"})
    assert (throttled.outcome, throttled.retry_after) == (Outcome.RATE_LIMITED, 4.0)
    broken = parse(200, message_errors(("mj-9999", 500, "internal", [])))
    assert broken.outcome is Outcome.RETRIABLE


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, "mj-0015", "API key or account refused: mj-0015"),
        (401, "mj-0001", "API key or account refused: mj-0001"),
        (403, "mj-9999", "API key or account refused"),
        (404, "mj-9999", "check base_url"),
        (405, "mj-9999", "check base_url"),
        (301, "mj-9999", "check base_url"),
    ],
)
def test_global_account_and_configuration_errors_are_vendor_config(
    status: int, code: str, words: str
) -> None:
    result = parse(status, global_error(code, status, "API key authentication failure"))
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, status)
    assert words in result.reason


def test_a_global_400_is_permanent_and_keeps_the_error_identifier() -> None:
    body = global_error("mj-0002", 400, "Malformed JSON, please review the syntax.")
    assert parse(400, body) == AttemptResult(
        Outcome.PERMANENT,
        status=400,
        reason="mj-0002 Malformed JSON, please review the syntax. [ErrorIdentifier 06df1144]",
    )


def test_429_is_rate_limited_with_retry_after_in_seconds_or_as_a_date() -> None:
    result = parse(429, global_error("mj-9999", 429, "Too many requests"), {"retry-after": "30"})
    assert (result.outcome, result.retry_after) == (Outcome.RATE_LIMITED, 30.0)
    assert result.reason.startswith("rate limited: ")
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, headers={"retry-after": when}).retry_after == 45.0
    assert parse(429).retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retriable(status: int) -> None:
    result = parse(status, global_error("mj-9999", status, "Internal error"))
    assert (result.outcome, result.status) == (Outcome.RETRIABLE, status)
    assert "[ErrorIdentifier 06df1144]" in result.reason


def test_503_keeps_retry_after() -> None:
    assert parse(503, headers={"retry-after": "9"}).retry_after == 9.0


def test_undocumented_4xx_is_retriable_and_says_so() -> None:
    assert parse(409, b"conflict") == AttemptResult(
        Outcome.RETRIABLE, status=409, reason="unexpected status: conflict"
    )


def test_reason_falls_back_to_the_status_phrase_and_is_kept_short() -> None:
    assert parse(502).reason == "Bad Gateway"
    long = parse(400, global_error("mj-0004", 400, "x" * 1000)).reason
    assert (len(long), long[-1]) == (300, "…")
