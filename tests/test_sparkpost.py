"""SparkPost adapter: exact transmissions, the official contract, and the status table."""

from __future__ import annotations

import base64
import email.utils
from email import policy
from email.parser import BytesParser
from functools import partial
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

from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import AttemptResult, HttpResponse, Outcome
from mailmux.vendors.sparkpost import SparkPostVendor

CONTRACT = load_contract("sparkpost.send.json")
REQUEST_SCHEMA = json_schema(endpoint(CONTRACT, "POST", "/api/v1/transmissions")["request"])
OK_BODY = orjson.dumps(
    {"results": {"total_rejected_recipients": 0, "total_accepted_recipients": 4, "id": "1166"}}
)
ACCEPTED = HttpResponse(200, {}, OK_BODY)
TO_HEADER = "=?utf-8?q?Ana_Mar=C3=ADa?= <ana@example.org>, bo@example.net"

#: SparkPost's smallest message carries HTML rather than text.
minimal_html = partial(minimal_message, text=None, html="<b>x")


vendor = vendor_factory(
    SparkPostVendor,
    "backup",
    ACCEPTED,
    api_key="sp-test-key",
    base_url="https://api.eu.sparkpost.com/",
)


def body_of(message: Message) -> dict[str, Any]:
    return json_of(vendor().build_request(message, MESSAGE_ID))


# -- Message → request ------------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://api.eu.sparkpost.com/api/v1/transmissions"
    assert request.headers == {
        "Authorization": "sp-test-key",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    tags = ["receipt", "spring"]
    assert orjson.loads(request.body) == {
        "options": {"perform_substitutions": False, "transactional": True},
        "recipients": [
            {
                "address": {
                    "email": "ana@example.org",
                    "name": "Ana María",
                    "header_to": TO_HEADER,
                },
                "tags": tags,
            },
            {"address": {"email": "bo@example.net", "header_to": TO_HEADER}, "tags": tags},
            {
                "address": {"email": "chen@example.com", "name": "陈伟", "header_to": TO_HEADER},
                "tags": tags,
            },
            {"address": {"email": "audit@example.com", "header_to": TO_HEADER}, "tags": tags},
        ],
        "content": {
            "from": {"email": "noreply@example.com", "name": "Zoë Ålander"},
            "subject": "Your receipt — №42 ✓",
            "text": "Thanks for your order.\n",
            "html": '<p>Thanks! <img src="cid:logo@x"></p>',
            "reply_to": "=?utf-8?b?U3VwcG9ydCDinIk=?= <support@example.com>",
            "headers": {
                "X-Campaign": "spring",
                "List-Unsubscribe": "<mailto:u@example.com>",
                "CC": "=?utf-8?b?6ZmI5Lyf?= <chen@example.com>",
            },
            "attachments": [
                {
                    "name": "reçu.pdf",
                    "type": "application/pdf",
                    "data": base64.b64encode(PDF).decode(),
                }
            ],
            "inline_images": [
                {"name": "logo@x", "type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUi1sb2dv"}
            ],
        },
        "metadata": {"order_id": "42", "customer": "c-7"},
    }


def test_minimal_message_has_no_header_to_and_leaves_out_empty_fields() -> None:
    assert body_of(minimal_html(traffic_class="newsletter")) == {
        "options": {"perform_substitutions": False},
        "recipients": [{"address": {"email": "b@example.com"}}],
        "content": {"from": {"email": "a@example.com"}, "subject": "Hi", "html": "<b>x"},
    }


def test_header_strings_quote_specials_and_use_punycode_domains() -> None:
    body = body_of(
        minimal_html(
            to=(Address("a@bücher.example", 'Doe, "JD" Jane'), Address("b@example.com", "Bo")),
            reply_to=(Address("r@example.com", "Desk; EU"), Address("s@example.com")),
        )
    )
    header_to = '"Doe, \\"JD\\" Jane" <a@xn--bcher-kva.example>, Bo <b@example.com>'
    assert body["recipients"] == [
        {
            "address": {
                "email": "a@xn--bcher-kva.example",
                "name": 'Doe, "JD" Jane',
                "header_to": header_to,
            }
        },
        {"address": {"email": "b@example.com", "name": "Bo", "header_to": header_to}},
    ]
    assert body["content"]["reply_to"] == '"Desk; EU" <r@example.com>, s@example.com'
    assert email.utils.getaddresses([header_to])[0] == ('Doe, "JD" Jane', "a@xn--bcher-kva.example")


@pytest.mark.parametrize(
    ("traffic_class", "options"),
    [
        ("otp", {"perform_substitutions": False, "transactional": True}),
        ("bulk", {"perform_substitutions": False, "transactional": False}),
        ("alerts", {"perform_substitutions": False}),
    ],
)
def test_the_traffic_class_decides_transactional(
    traffic_class: str, options: dict[str, bool]
) -> None:
    assert body_of(minimal_html(traffic_class=traffic_class))["options"] == options


def test_raw_mime_goes_as_email_rfc822_with_recipients_from_the_envelope() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\n\r\nhello {{name}}\r\n"
    message = minimal_html(
        raw_mime=raw, bcc=(Address("hidden@example.com"),), tags=("t",), metadata={"k": "v"}
    )
    assert body_of(message) == {
        "options": {"perform_substitutions": False, "transactional": True},
        "recipients": [
            {"address": {"email": "b@example.com"}, "tags": ["t"]},
            {"address": {"email": "hidden@example.com"}, "tags": ["t"]},
        ],
        "content": {"email_rfc822": raw.decode()},
        "metadata": {"k": "v"},
    }


def test_a_single_cc_without_more_to_still_gets_header_to() -> None:
    body = body_of(minimal_html(cc=(Address("c@example.com"),)))
    assert [r["address"]["header_to"] for r in body["recipients"]] == ["b@example.com"] * 2
    assert body["content"]["headers"] == {"CC": "c@example.com"}


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        minimal_html(),
        minimal_html(raw_mime=b"From: a@example.com\r\n\r\nhi"),
        rich_message(tags=tuple(f"t{i}" for i in range(10)), metadata={}, headers={}),
    ],
    ids=["rich", "minimal", "raw-mime", "ten-tags"],
)
def test_request_bodies_validate_against_the_official_contract(message: Message) -> None:
    assert validate(REQUEST_SCHEMA, body_of(message)) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    source = CONTRACT["x-contract"]["source"]
    assert source["repo"] == "SparkPost/developers.sparkpost.com"
    assert source["license"].startswith("MIT")


# -- what SparkPost cannot carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(subject=""), "empty subject"),
        (rich_message(text=None, html=""), "no text or HTML body"),
        (rich_message(to=(), subject="Hi {{name}}"), "'{{' in the subject"),
        (rich_message(raw_mime=b"Subject: caf\xe9\r\n\r\nx"), "raw MIME that is not UTF-8"),
        (rich_message(raw_mime=b"Subject: {{x}}\r\n\r\nx"), "header of the raw MIME"),
        (rich_message(subject="Hi {{name}}"), "'{{' in the subject"),
        (rich_message(headers={"X-T": "{{v}}"}), "'{{' in the header X-T"),
        (rich_message(cc=(Address("c@example.com", "{{n}}"),)), "display name of c@example.com"),
        (rich_message(tags=tuple(f"t{i}" for i in range(11))), "11 tags; SparkPost keeps"),
        (rich_message(metadata={"blob": "x" * 10_230}), "SparkPost takes at most 10240"),
        (
            rich_message(attachments=(Attachment("é" * 128 + ".txt", b"x", "text/plain"),)),
            "attachment filename",
        ),
        (
            rich_message(
                attachments=(Attachment("a.png", b"x", "image/png", inline=True, content_id=None),)
            ),
            "has no content id",
        ),
        (
            rich_message(
                attachments=(
                    Attachment("a.png", b"x", "image/png", inline=True, content_id="same"),
                    Attachment("b.png", b"y", "image/png", inline=True, content_id="same"),
                )
            ),
            "two inline images with content id 'same'",
        ),
        (
            rich_message(attachments=(Attachment("big.bin", b"\0" * (15 * 2**20)),)),
            "SparkPost takes at most 20 MB",
        ),
    ],
    ids=[
        "subject",
        "body",
        "no-to-braces",
        "raw-not-utf8",
        "raw-template",
        "subject-template",
        "header-template",
        "name-template",
        "tags",
        "metadata",
        "filename",
        "inline-no-cid",
        "duplicate-cid",
        "size",
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
    metadata = {"blob": "x" * 10_229}  # 10,240 bytes once encoded
    assert len(orjson.dumps(metadata)) == 10_240
    assert body_of(rich_message(metadata=metadata))["metadata"] == metadata


@pytest.mark.parametrize(
    ("cc", "bcc"),
    [
        ((), (Address("audit@example.com"), Address("boss@example.com", "Boss"))),
        ((Address("chen@example.com", "陈伟"),), ()),
        ((Address("chen@example.com", "陈伟"),), (Address("audit@example.com"),)),
    ],
    ids=["bcc", "cc", "cc+bcc"],
)
def test_a_message_without_to_goes_as_rendered_mime_with_bcc_only_among_recipients(
    cc: tuple[Address, ...], bcc: tuple[Address, ...]
) -> None:
    body = body_of(rich_message(to=(), cc=cc, bcc=bcc))

    everyone = (*cc, *bcc)
    assert [r["address"]["email"] for r in body["recipients"]] == [a.email for a in everyone]
    assert all("header_to" not in r["address"] for r in body["recipients"])
    assert all(r["tags"] == ["receipt", "spring"] for r in body["recipients"])
    assert body["metadata"] == {"order_id": "42", "customer": "c-7"}
    (rfc822,) = body["content"].values()
    mime = BytesParser(policy=policy.default).parsebytes(rfc822.encode())
    assert mime["Bcc"] is None
    if cc:
        assert (mime["To"], [a.addr_spec for a in mime["Cc"].addresses]) == (None, [cc[0].email])
    else:
        assert (str(mime["To"]), mime["Cc"]) == ("undisclosed-recipients:;", None)
    assert not any(a.email in rfc822 for a in bcc)
    assert mime["Date"].datetime.timestamp() == NOW
    assert validate(REQUEST_SCHEMA, body) == []


def test_raw_mime_needs_no_subject_body_or_to() -> None:
    raw = b"From: a@example.com\r\nSubject: x\r\n\r\nbody"
    message = minimal_html(raw_mime=raw, to=(), bcc=(Address("b@example.com"),), html=None)
    assert body_of(message)["content"] == {"email_rfc822": raw.decode()}


# -- send through the pipeline --------------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_transmission_id() -> None:
    body = {"results": {"total_rejected_recipients": 0, "total_accepted_recipients": 4, "id": "7"}}
    transport = FakeTransport(HttpResponse(200, {}, orjson.dumps(body)))
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(Outcome.ACCEPTED, vendor_message_id="7", status=200)
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.url.endswith("/api/v1/transmissions")


def test_an_empty_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_key"):
        SparkPostVendor("backup", FakeTransport(ACCEPTED), api_key="")


# -- response → outcome ---------------------------------------------------------------


def errors(*triples: tuple[str, str, str]) -> bytes:
    return orjson.dumps(
        {"errors": [{"message": m, "description": d, "code": c} for m, d, c in triples]}
    )


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


def results(accepted: int, rejected: int, **extra: Any) -> bytes:
    totals = {"total_accepted_recipients": accepted, "total_rejected_recipients": rejected}
    return orjson.dumps({"results": {**totals, "id": "84", **extra}})


def test_all_recipients_accepted_is_accepted_with_the_transmission_id() -> None:
    assert parse(200, results(4, 0)) == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="84", status=200
    )


def test_a_numeric_transmission_id_is_kept_as_text() -> None:
    body = orjson.dumps({"results": {"total_accepted_recipients": 1, "id": 1166787484950529}})
    assert parse(200, body).vendor_message_id == "1166787484950529"


def test_some_rejected_recipients_are_accepted_with_a_note() -> None:
    rcpt_errors = [{"message": "Invalid recipient", "code": "1902", "description": "bad@x"}]
    result = parse(200, results(3, 1, rcpt_to_errors=rcpt_errors))
    assert result == AttemptResult(
        Outcome.ACCEPTED,
        vendor_message_id="84",
        status=200,
        reason="1 of 4 recipients rejected: Invalid recipient: bad@x (code 1902)",
    )


def test_every_recipient_rejected_is_permanent() -> None:
    assert parse(200, results(0, 2)) == AttemptResult(
        Outcome.PERMANENT, vendor_message_id="84", status=200, reason="all 2 recipients rejected"
    )


def test_validation_errors_beside_the_results_are_noted() -> None:
    body = orjson.loads(results(1, 0))
    body["errors"] = [{"message": "ignored field", "code": "2000"}]
    result = parse(200, orjson.dumps(body))
    assert (result.outcome, result.reason) == (Outcome.ACCEPTED, "ignored field (code 2000)")


@pytest.mark.parametrize("body", [b"", b"<html>welcome</html>", b'{"results": {}}', b"[1]"])
def test_a_2xx_without_a_transmission_id_is_ambiguous(body: bytes) -> None:
    result = parse(200, body)
    assert (result.outcome, result.status) == (Outcome.AMBIGUOUS, 200)
    assert "check base_url" in result.reason


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, "1902", Outcome.PERMANENT),
        (400, "1200", Outcome.PERMANENT),
        (400, "7001", Outcome.VENDOR_CONFIG),
        (400, "7000", Outcome.VENDOR_CONFIG),
        (400, "1910", Outcome.VENDOR_CONFIG),
        (400, "2010", Outcome.VENDOR_CONFIG),
        (400, "1502", Outcome.RETRIABLE),
        (422, "1400", Outcome.PERMANENT),
        (422, "3002", Outcome.PERMANENT),
        (401, "1303", Outcome.VENDOR_CONFIG),
        (403, "1100", Outcome.VENDOR_CONFIG),
        (404, "1600", Outcome.VENDOR_CONFIG),
        (405, "1102", Outcome.VENDOR_CONFIG),
        (406, "1800", Outcome.VENDOR_CONFIG),
        (415, "1700", Outcome.VENDOR_CONFIG),
        (413, "10001", Outcome.UNSUPPORTED),
        (500, "1500", Outcome.RETRIABLE),
        (503, "1900", Outcome.RETRIABLE),
        (409, "1602", Outcome.RETRIABLE),
    ],
)
def test_documented_errors_map_to_their_outcome(status: int, code: str, outcome: Outcome) -> None:
    result = parse(status, errors(("Something", "in detail", code)))
    assert (result.outcome, result.status) == (outcome, status)
    assert result.reason.endswith(f"Something: in detail (code {code})")


def test_reasons_say_what_to_fix() -> None:
    assert parse(400, errors(("Invalid domain", "Unconfigured Sending Domain", "7001"))).reason == (
        "account not set up: Invalid domain: Unconfigured Sending Domain (code 7001)"
    )
    assert parse(404).reason == "not found; check base_url: Not Found"
    assert parse(302).outcome is Outcome.VENDOR_CONFIG
    assert parse(413).reason == "sparkpost: too large: Request Entity Too Large"
    assert parse(409).reason == "unexpected status: Conflict"


def test_420_plan_limit_is_rate_limited_and_says_quota() -> None:
    body = errors(("Exceed Sending Limit (hourly)", "hourly limit reached", "2101"))
    result = parse(420, body, {"retry-after": "600"})
    assert result == AttemptResult(
        Outcome.RATE_LIMITED,
        status=420,
        reason=(
            "sending limit of the plan reached (quota):"
            " Exceed Sending Limit (hourly): hourly limit reached (code 2101)"
        ),
        retry_after=600.0,
    )
    assert parse(420).retry_after is None


def test_429_takes_retry_after_in_seconds_or_as_a_date() -> None:
    result = parse(429, errors(("Too many requests", "slow down", "")), {"retry-after": "30"})
    assert result == AttemptResult(
        Outcome.RATE_LIMITED,
        status=429,
        reason="rate limited: Too many requests: slow down",
        retry_after=30.0,
    )
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, headers={"retry-after": when}).retry_after == 45.0
    assert parse(429).retry_after is None


def test_503_keeps_retry_after() -> None:
    assert parse(503, headers={"retry-after": "9"}).retry_after == 9.0


def test_reason_falls_back_to_the_body_then_to_the_status_phrase_and_is_short() -> None:
    assert parse(502, b"<html>Bad gateway</html>").reason == "<html>Bad gateway</html>"
    assert parse(502).reason == "Bad Gateway"
    assert parse(599).reason == "HTTP 599"
    long = parse(422, errors(("x" * 1000, "", "1300"))).reason
    assert len(long) == 300
    assert long.endswith("…")
