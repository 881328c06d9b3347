"""Mailgun adapter: the exact multipart request, Mailgun's form contract, and the status table."""

from __future__ import annotations

import email.utils
import re
from email import policy
from email.parser import BytesParser
from typing import Any

import orjson
import pytest
from vendor_kit import (
    MESSAGE_ID,
    NOW,
    PDF,
    PNG,
    FakeTransport,
    at_now,
    endpoint,
    load_contract,
    minimal_message,
    rich_message,
    validate,
)

from mailmux.message import Address, Attachment, Message
from mailmux.vendors.base import (
    AttemptResult,
    HttpResponse,
    Outcome,
    UnsupportedFeature,
)
from mailmux.vendors.mailgun import MailgunVendor, encode_multipart

CONTRACT = load_contract("mailgun.send.json")
SEND = endpoint(CONTRACT, "POST", "/v3/{domain_name}/messages")
FORM = SEND["request"]["content"]["multipart/form-data"]
RAW = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: raw\r\n\r\nhello\r\n"
QUEUED = b'{"id":"<20300101.1@mg.example.com>","message":"Queued. Thank you."}'
ACCEPTED = HttpResponse(200, {}, QUEUED)


def vendor(transport: FakeTransport | None = None, **settings: str) -> MailgunVendor:
    mailgun = MailgunVendor(
        "backup",
        transport or FakeTransport(ACCEPTED),
        api_key=settings.get("api_key", "key-test-123"),
        domain=settings.get("domain", "mg.example.com"),
        base_url=settings.get("base_url", "https://api.eu.mailgun.net/"),
    )
    mailgun.boundary = lambda: "BOUNDARY"
    return at_now(mailgun)


def parse_form(body: bytes, boundary: str = "BOUNDARY") -> list[tuple[str, str | None, bytes]]:
    """(name, filename, value) for every part, read independently of the encoder."""
    delimiter = b"--" + boundary.encode()
    assert body.endswith(delimiter + b"--\r\n")
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        head, _, value = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode().split("\r\n")[0]
        name = re.search(r'; name="([^"]*)"', disposition)
        filename = re.search(r'; filename="([^"]*)"', disposition)
        assert name is not None, disposition
        parts.append((name[1], filename[1] if filename else None, value.removesuffix(b"\r\n")))
    return parts


def fields_of(message: Message) -> list[tuple[str, str]]:
    request = vendor().build_request(message, MESSAGE_ID)
    return [(n, v.decode()) for n, f, v in parse_form(request.body) if f is None]


# -- Message → request ------------------------------------------------------


def test_rich_message_becomes_the_exact_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://api.eu.mailgun.net/v3/mg.example.com/messages"
    assert request.headers == {
        "Authorization": "Basic YXBpOmtleS10ZXN0LTEyMw==",  # api:key-test-123
        "Content-Type": "multipart/form-data; boundary=BOUNDARY",
        "Accept": "application/json",
    }
    field = '--BOUNDARY\r\nContent-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'.format
    expected = "".join(
        field(name, value)
        for name, value in [
            ("from", "Zoë Ålander <noreply@example.com>"),
            ("to", "Ana María <ana@example.org>"),
            ("to", "bo@example.net"),
            ("cc", "陈伟 <chen@example.com>"),
            ("bcc", "audit@example.com"),
            ("subject", "Your receipt — №42 ✓"),
            ("text", "Thanks for your order.\n"),
            ("html", '<p>Thanks! <img src="cid:logo@x"></p>'),
            ("h:Reply-To", "Support ✉ <support@example.com>"),
            ("h:X-Campaign", "spring"),
            ("h:List-Unsubscribe", "<mailto:u@example.com>"),
            ("o:tag", "receipt"),
            ("o:tag", "spring"),
            ("v:order_id", "42"),
            ("v:customer", "c-7"),
        ]
    ).encode()
    expected += (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="inline"; filename="logo@x"\r\n'
        b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n"
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="attachment"; '
        b'filename="re\xc3\xa7u.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n" + PDF + b"\r\n"
        b"--BOUNDARY--\r\n"
    )
    assert request.body == expected


def test_minimal_message_leaves_out_every_empty_field() -> None:
    message = minimal_message(subject="", text=None, html="<b>x")
    assert fields_of(message) == [
        ("from", "a@example.com"),
        ("to", "b@example.com"),
        ("subject", ""),  # Mailgun requires the field
        ("html", "<b>x"),
    ]


def test_names_with_address_syntax_are_quoted_and_idn_domains_go_out_in_punycode() -> None:
    fields = fields_of(
        rich_message(
            sender=Address("noreply@bücher.example", "Shop, Inc."),
            to=(Address("a@example.com", 'Doe "JD" Jane'), Address("b@example.com", "x;y")),
            reply_to=(Address("r@example.com", "Desk"), Address("s@example.com")),
        )
    )
    assert fields[:3] == [
        ("from", '"Shop, Inc." <noreply@xn--bcher-kva.example>'),
        ("to", '"Doe \\"JD\\" Jane" <a@example.com>'),
        ("to", '"x;y" <b@example.com>'),
    ]
    assert ("h:Reply-To", "Desk <r@example.com>, s@example.com") in fields


def test_raw_mime_goes_to_messages_mime_with_the_whole_envelope() -> None:
    message = rich_message(raw_mime=RAW, tags=("t1",), metadata={"k": "v"})
    request = vendor().build_request(message, MESSAGE_ID)

    assert request.url == "https://api.eu.mailgun.net/v3/mg.example.com/messages.mime"
    assert parse_form(request.body) == [
        ("to", None, b"ana@example.org"),
        ("to", None, b"bo@example.net"),
        ("to", None, b"chen@example.com"),
        ("to", None, b"audit@example.com"),
        ("o:tag", None, b"t1"),
        ("v:k", None, b"v"),
        ("message", "message.mime", RAW),
    ]
    assert b"Content-Type: message/rfc822\r\n" in request.body


@pytest.mark.parametrize(
    ("cc", "bcc"),
    [
        ((), (Address("audit@example.com"), Address("boss@example.com"))),
        ((Address("chen@example.com", "陈伟"),), ()),
        ((Address("chen@example.com", "陈伟"),), (Address("audit@example.com"),)),
    ],
    ids=["bcc", "cc", "cc+bcc"],
)
def test_a_message_without_to_goes_to_messages_mime_with_bcc_only_in_the_envelope(
    cc: tuple[Address, ...], bcc: tuple[Address, ...]
) -> None:
    message = rich_message(to=(), cc=cc, bcc=bcc, tags=("t1",), metadata={"k": "v"})
    request = vendor().build_request(message, MESSAGE_ID)

    assert request.url == "https://api.eu.mailgun.net/v3/mg.example.com/messages.mime"
    *fields, (name, filename, raw) = parse_form(request.body)
    assert fields == [
        *(("to", None, a.email.encode()) for a in (*cc, *bcc)),
        ("o:tag", None, b"t1"),
        ("v:k", None, b"v"),
    ]
    assert (name, filename) == ("message", "message.mime")
    mime = BytesParser(policy=policy.default).parsebytes(raw)
    assert mime["Bcc"] is None
    if cc:
        assert mime["To"] is None
        assert [a.addr_spec for a in mime["Cc"].addresses] == [a.email for a in cc]
    else:
        assert mime["To"].groups[0].display_name == "undisclosed-recipients"
        assert mime["Cc"] is None
    for hidden in bcc:
        assert hidden.email.encode() not in raw
    assert (mime["Reply-To"], mime["X-Campaign"]) == ("Support ✉ <support@example.com>", "spring")
    assert mime["Date"].datetime.timestamp() == NOW
    assert [p.get_filename() for p in mime.iter_attachments()] == ["reçu.pdf"]


def test_base_url_may_carry_the_api_version_and_the_domain_is_escaped() -> None:
    request = vendor(base_url="http://127.0.0.1:9/v3", domain="mg.ex ample").build_request(
        rich_message(), MESSAGE_ID
    )
    assert request.url == "http://127.0.0.1:9/v3/mg.ex%20ample/messages"


def test_quotes_and_line_breaks_in_part_names_are_escaped() -> None:
    body = encode_multipart([('a"b', "v")], [("f", 'x"\r\n.txt', None, b"data")], "B")
    assert body == (
        b'--B\r\nContent-Disposition: form-data; name="a%22b"\r\n\r\nv\r\n'
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="x%22%0D%0A.txt"\r\n\r\n'
        b"data\r\n--B--\r\n"
    )


def test_the_default_boundary_is_random() -> None:
    mailgun = MailgunVendor("m", FakeTransport(ACCEPTED), api_key="k", domain="mg.example.com")
    first, second = (mailgun.build_request(rich_message(), MESSAGE_ID) for _ in range(2))
    assert first.headers["Content-Type"] != second.headers["Content-Type"]
    boundary = first.headers["Content-Type"].partition("boundary=")[2]
    assert re.fullmatch(r"mailmux-[0-9a-f]{32}", boundary)
    assert first.body.endswith(f"--{boundary}--\r\n".encode())


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        rich_message(reply_to=(), headers={}, attachments=(), tags=(), metadata={}),
        rich_message(tags=tuple(f"t{i}" for i in range(10))),
    ],
    ids=["rich", "plain", "ten-tags"],
)
def test_forms_validate_against_mailgun_s_contract(message: Message) -> None:
    parts = parse_form(vendor().build_request(message, MESSAGE_ID).body)
    repeatable = {f["name"] for f in FORM["x-form-fields"] if f["repeatable"]}
    known = {f["name"] for f in FORM["x-form-fields"]}
    patterns = [re.compile(p) for p in FORM["x-form-field-patterns"]]
    form: dict[str, Any] = {}
    for name, filename, value in parts:
        assert name in known or any(p.match(name) for p in patterns), name
        text = filename if filename is not None else value.decode()
        if name in repeatable:
            form.setdefault(name, []).append(text)
        else:
            assert name not in form, f"{name} sent twice"
            form[name] = text
    assert validate(FORM["schema"], form) == []


def test_the_contract_copy_still_cites_its_source() -> None:
    source = CONTRACT["x-contract"]["source"]
    assert source["repo"] == "mailgun/mailgun-mcp-server"
    assert source["official"] is True


def test_a_missing_api_key_or_domain_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_key"):
        MailgunVendor("m", FakeTransport(ACCEPTED), api_key="", domain="mg.example.com")
    for domain in ("", "mg.example.com/x"):
        with pytest.raises(ValueError, match="sending domain"):
            MailgunVendor("m", FakeTransport(ACCEPTED), api_key="k", domain=domain)


# -- what Mailgun cannot carry -----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (rich_message(text="", html=None), "no text or HTML body"),
        (rich_message(tags=tuple(f"t{i}" for i in range(11))), "11 tags; Mailgun takes at most 10"),
        (
            rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(999))),
            "1001 recipients; Mailgun takes at most 1000",
        ),
        (
            rich_message(to=(), cc=(), bcc=(), raw_mime=RAW),
            "no recipient: Mailgun's messages.mime",
        ),
        (rich_message(metadata={"blob": "x" * 16_400}), "Mailgun takes at most 16384 bytes"),
        (
            rich_message(attachments=(Attachment("big.bin", b"\0" * (25 * 2**20)),)),
            "Mailgun takes at most 25 MB",
        ),
    ],
    ids=["body", "tags", "recipients", "mime-recipients", "options", "size"],
)
async def test_unsupported_features_end_as_unsupported_without_a_request(
    message: Message, reason: str
) -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)

    assert result.outcome is Outcome.UNSUPPORTED
    assert reason in result.reason
    assert transport.calls == []


def test_options_up_to_exactly_16_kb_are_sent() -> None:
    plain: dict[str, Any] = {"reply_to": (), "headers": {}, "tags": ()}
    at_limit = rich_message(metadata={"b": "x" * (16 * 1024 - 3)}, **plain)  # "v:b" + value
    assert ("v:b", "x" * (16 * 1024 - 3)) in fields_of(at_limit)
    with pytest.raises(UnsupportedFeature, match="16385 bytes"):
        vendor().build_request(
            rich_message(metadata={"b": "x" * (16 * 1024 - 2)}, **plain), MESSAGE_ID
        )


def test_raw_mime_needs_no_parsed_body_and_duplicate_tags_count_once() -> None:
    request = vendor().build_request(rich_message(raw_mime=RAW, text=None, html=None), MESSAGE_ID)
    assert request.url.endswith("/messages.mime")
    tags = [v for n, _, v in parse_form(request.body) if n == "o:tag"]
    assert tags == [b"receipt", b"spring"]


# -- send through the pipeline ---------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_id() -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="20300101.1@mg.example.com", status=200
    )
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.url.endswith("/v3/mg.example.com/messages")


# -- response → outcome ----------------------------------------------------------


def parse(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> AttemptResult:
    return vendor().parse_response(HttpResponse(status, headers or {}, body))


def message_body(text: str) -> bytes:
    return orjson.dumps({"message": text})


def test_200_with_mailgun_s_body_is_accepted_without_angle_brackets() -> None:
    assert parse(200, QUEUED) == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="20300101.1@mg.example.com", status=200
    )


@pytest.mark.parametrize(
    "body",
    [b"Mailgun Magnificent API", b"", b'{"message": "Queued. Thank you."}', b'{"id": ""}', b"[]"],
)
def test_200_without_a_message_id_is_vendor_config(body: bytes) -> None:
    result = parse(200, body)
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, 200)
    assert "check base_url" in result.reason
    assert result.vendor_message_id is None


def test_400_is_permanent_with_mailgun_s_message() -> None:
    assert parse(400, message_body("'to' parameter is not a valid address.")) == AttemptResult(
        Outcome.PERMANENT, status=400, reason="'to' parameter is not a valid address."
    )


def test_413_is_permanent() -> None:
    result = parse(413, b"<html>Request Entity Too Large</html>")
    assert (result.outcome, result.reason) == (
        Outcome.PERMANENT,
        "<html>Request Entity Too Large</html>",
    )


def test_a_domain_that_may_not_send_is_vendor_config_not_the_message_s_fault() -> None:
    text = (
        "Domain sandbox1.mailgun.org is not allowed to send: Free accounts are for test"
        " purposes only."
    )
    result = parse(400, message_body(text))
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, 400)
    assert result.reason.endswith(text)


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (401, b"Forbidden", "API key rejected: Forbidden"),
        (403, message_body("Forbidden"), "may not send for this domain"),
        (404, message_body("Domain not found: mg.example.com"), "Domain not found"),
        (404, b"404 page not found", "wrong base_url"),
        (405, b"", "check base_url: Method Not Allowed"),
        (301, b"", "redirected; check base_url"),
    ],
)
def test_account_and_configuration_trouble_is_vendor_config(
    status: int, body: bytes, words: str
) -> None:
    result = parse(status, body)
    assert (result.outcome, result.status) == (Outcome.VENDOR_CONFIG, status)
    assert words in result.reason


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retriable(status: int) -> None:
    result = parse(status, message_body("Internal error"))
    assert result == AttemptResult(Outcome.RETRIABLE, status=status, reason="Internal error")


def test_5xx_keeps_retry_after_and_falls_back_to_the_status_phrase() -> None:
    assert parse(503, headers={"retry-after": "9"}) == AttemptResult(
        Outcome.RETRIABLE, status=503, reason="Service Unavailable", retry_after=9.0
    )


def test_undocumented_4xx_is_retriable_and_says_so() -> None:
    assert parse(409, message_body("conflict")) == AttemptResult(
        Outcome.RETRIABLE, status=409, reason="unexpected status: conflict"
    )


def test_429_is_rate_limited_with_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse(429, message_body("Too many requests"), {"retry-after": "30"}) == AttemptResult(
        Outcome.RATE_LIMITED, status=429, reason="rate limited: Too many requests", retry_after=30.0
    )
    when = email.utils.formatdate(NOW + 45, usegmt=True)
    assert parse(429, headers={"retry-after": when}).retry_after == 45.0
    assert parse(429).retry_after is None


def test_reason_is_kept_short() -> None:
    result = parse(400, message_body("x" * 1000))
    assert len(result.reason) == 300
    assert result.reason.endswith("…")
